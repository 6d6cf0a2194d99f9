"""The router itself: the text encoder (:mod:`.encoder`), the neighbour bank (:mod:`.neighbours`),
the router that estimates and routes (:mod:`.router`) and its model card (:mod:`.card`)."""
