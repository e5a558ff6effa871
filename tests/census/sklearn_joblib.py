"""scikit-learn with joblib: a pipeline, cross-validation and GridSearchCV(n_jobs=2); joblib Parallel."""

import numpy as np

try:
    from joblib import Parallel, delayed
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError:
    print("scikit-learn not installed")
    raise SystemExit(0) from None

X, y = make_classification(n_samples=600, n_features=12, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
print(cross_val_score(pipe, X_train, y_train, cv=3).round(2))
grid = GridSearchCV(RandomForestClassifier(random_state=0), {"n_estimators": [10, 20]}, cv=2, n_jobs=2)
grid.fit(X_train, y_train)
print(grid.best_params_, round(grid.score(X_test, y_test), 2))
print(sum(Parallel(n_jobs=2)(delayed(np.sqrt)(i) for i in range(20))) > 0)
import joblib  # noqa: E402

joblib.dump(grid.best_estimator_, "model.joblib")
print(type(joblib.load("model.joblib")).__name__)
