"""Data: download cache, sources (MILES, MARCS, lines, SME, PHOENIX), splits, store, pretrained nets."""
