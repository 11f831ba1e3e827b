"""Model families that live only in the tests: they prove the family contract needs nothing of
podium's own code (profiles name them by module path, ``family = "tests.families.toy"``)."""
