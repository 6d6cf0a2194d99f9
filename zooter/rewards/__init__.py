"""The score stage: what gives a reward (:mod:`.scorers`), the responses file the collect stage
writes (:mod:`.responses`) and the resumable scoring run (:mod:`.scoring`)."""
