"""The label stage: rewards to soft targets (:mod:`.targets`) and where tags come from, for the
paper's tag-based enhancement (:mod:`.tagging`)."""
