"""sqlite3: a file database and an in-memory one, transactions, pandas to_sql/read_sql."""

import sqlite3

import pandas as pd

con = sqlite3.connect("shop.db")
con.execute("create table orders (id integer primary key, item text, qty integer)")
with con:
    con.executemany("insert into orders (item, qty) values (?, ?)", [("apple", 3), ("pear", 5)] * 100)
print(con.execute("select item, sum(qty) from orders group by item").fetchall())
df = pd.read_sql("select * from orders", con)
df.to_sql("orders_copy", con, index=False)
print(pd.read_sql("select count(*) as n from orders_copy", con).n[0])
con.execute("pragma journal_mode=wal")
con.execute("insert into orders (item, qty) values ('plum', 1)")
con.commit()
con.close()
mem = sqlite3.connect(":memory:")
mem.execute("create table t (x)")
mem.executemany("insert into t values (?)", [(i,) for i in range(1000)])
print(mem.execute("select avg(x) from t").fetchone())
