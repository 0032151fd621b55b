"""What runs leave behind and what is read back from it: the run folder and its results.json, the record's
provenance, and the tables built from those files."""
