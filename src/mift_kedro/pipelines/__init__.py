"""The three pipelines of the study, connected only through the data catalog."""
