"""Physical constants of protein backbones, each with its unit in its name.

One definition per number: the metrics (:mod:`protein.metrics`), the motif and fold-plan
scores, the flow's clash guidance and the file readers all import them from here. Files and
metrics are in angstrom (``_ANG``); the networks and the flow work in nanometres (``_NM``).
"""

from __future__ import annotations

ANG_TO_NM = 0.1
NM_TO_ANG = 10.0

# Consecutive CA-CA distance of a trans peptide, and the tolerance a "valid" bond is given.
CA_CA_IDEAL_ANG = 3.80
CA_CA_TOL_ANG = 0.20
CA_CA_IDEAL_NM = 0.38  # the same bond for the flow (written out: 3.80 * 0.1 is not 0.38 in floats)

# Steric clashes: CA pairs at least this many residues apart (every non-adjacent pair) ...
CLASH_MIN_SEPARATION = 2
# ... closer than this count as a clash in the metrics (real chains have none) ...
CLASH_DISTANCE_ANG = 3.0
# ... and clash guidance pushes apart pairs closer than this while sampling.
CLASH_GUIDANCE_DISTANCE_NM = 0.38
# CA pairs 2, 3 and 4 residues apart (the local chain) are held apart by the chain itself:
# in 200 training chains their 0.1st percentiles are 4.74 / 4.48 / 4.45 A and their 1st
# 5.12 / 4.80 / 5.14 A. Clash guidance can hold these separations to their own floors
# (``sample.local_min_dist``); without them a sampled helix may fold to CA(i, i+3) 3.7 A.
LOCAL_SEPARATIONS = (2, 3, 4)
LOCAL_MIN_DIST_MAX_ANG = 8.0  # a floor above this is no floor but a straightened chain
# A local pair (2-4 residues apart) closer than this is folded tighter than real chains
# fold: 0.01-0.02% of such pairs in those 200 chains (protein.metrics.count_tight_local).
LOCAL_TIGHT_ANG = 4.2

# Non-adjacent CAs closer than a CA-CA bond: 17 of 681,643 pairs in 90 real chains (TS50 and
# the Kortemme domains), the closest 3.57 A; true strand partners sit at 4.4-5.5 A.
STRAND_MIN_CA_DISTANCE_ANG = 3.8
# CA distance to the nearest partner of a strand residue in a real sheet (closer: stacked).
PARTNER_RANGE_ANG = (4.2, 5.6)
# Two secondary-structure elements pack when this many of their CA pairs are this close.
CONTACT_DISTANCE_ANG = 6.0
CONTACT_PAIRS = 2

# C(i)-N(i+1) is 1.33 A in a peptide bond; a longer gap is a chain break.
PEPTIDE_BOND_MAX_ANG = 2.0

# Two structures with a TM-score at least this share a fold (clustering).
TM_CLUSTER = 0.5

# Radius of gyration of compact globular chains, Rg ~ RG_PREFACTOR_ANG * L^RG_EXPONENT
# (the data filter's and the evaluation's law, and the length-scaled translation prior's).
RG_PREFACTOR_ANG = 2.2
RG_EXPONENT = 0.38
