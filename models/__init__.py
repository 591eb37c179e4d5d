"""Networks and encoders: BPR-MF and SASRec in `models.bpr` and `models.sasrec` (embedding tables that grow
with the catalogue, `models.growable`), and the catalogue text encoder in `models.text_encoder`.

Empty on purpose: importing the text encoder must not pull in the recommenders, and vice versa."""
