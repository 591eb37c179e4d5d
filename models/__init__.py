"""Networks and encoders: BPR-MF and SASRec (embedding tables that grow with the catalogue), and the
catalogue text encoder in `models.text_encoder` (imported on its own: it needs no recommender)."""

from models.bpr import BPRMF
from models.growable import GrowableEmbedding, IdIndex
from models.sasrec import SASRec

__all__ = ["BPRMF", "SASRec", "GrowableEmbedding", "IdIndex"]
