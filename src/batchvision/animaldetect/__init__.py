"""State of the AnimalDetect surface: batch-detect responses kept for `GET …/batch-detect/{id}`."""
