"""The trainer: learns a recommender from the clean stream, unlearns retractions, gates every version."""
