"""Named SQL queries of the api package (loaded with bridge.sqlfile)."""
