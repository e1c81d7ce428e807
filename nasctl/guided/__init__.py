"""Predictor-guided search (BRP-NAS, BANANAS): train a few nets through the user's trainer, fit
an accuracy model, propose the next nets predicted to meet every target, repeat."""
