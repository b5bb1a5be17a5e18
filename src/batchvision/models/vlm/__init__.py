"""Vision-language backends; see `models.vlm.kinds` for the model contract they implement."""
