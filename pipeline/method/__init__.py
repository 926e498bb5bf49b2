"""The method: the encoder and MoCo module (models, moco), the loss terms (losses, plan), Eq. 7's history and schedule, and the compared methods as objects (methods)."""
