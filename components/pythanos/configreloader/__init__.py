"""``pythanos config-reloader``: watch directories, POST a reload URL when their content changes."""
