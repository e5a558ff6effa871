"""code_interpreter: a safe, fast execute_python_code tool for LLM agents."""
