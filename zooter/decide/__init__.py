"""The decision: estimates to one expert (:mod:`.policy`) and what each expert costs (:mod:`.costs`)."""
