"""What a dataset is trained for, and how a text is cut into tokens: names only, no torch, so that
code which only names them (the database tables, the CLI's admin commands) loads no torch."""
TASKS = ("classification", "regression")        # a table's tasks
LANGUAGE_MODEL = "language_model"               # the task of a text dataset: predict each next token
TOKENIZERS = ("byte", "char")                   # a text's tokenizers: its UTF-8 bytes, or its characters
