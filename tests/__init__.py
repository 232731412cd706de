"""llamaduo's test suite (a package so shared fakes import as `tests.fakes`)."""
