"""The router itself: the text encoder (:mod:`.encoder`), the neighbour bank (:mod:`.neighbours`),
the router that estimates and routes (:mod:`.router`), its saving and loading (:mod:`.persistence`,
reading a folder whole through :mod:`.folder`) and its model card (:mod:`.card`)."""
