"""The study's rows: what each compares, how it is run, and which row it is paired with.

:mod:`remap_lib.evaluation.study` runs them, :mod:`remap_lib.evaluation.studystats` aggregates them.

Rows (:data:`ROWS`)
    * ``deep-REMAP``: the full method at the ``default`` budget: the profile's pretrained network
      (:func:`~remap_lib.data.pretrained.find_pretrained`), fine-tuned as notebook 03 (03_finetune
      ``default``: 60 epochs, 3 members), per-member temperatures. Seeds are fine-tuning seeds.
      Its runs also give, with no more training, ``no temperature scaling`` (the same members,
      T = 1), ``one member`` (member 0 with its temperatures), ``pretrained only`` (the
      pretrained network, temperatures fitted on the fold's temperature stars, no fine-tuning) and
      ``coverage calibration`` (the same members, one temperature per label shared by them, fitted
      to the interval coverage of the fold's temperature stars instead of their likelihood).
    * ``synthetic rehearsal``: deep-REMAP fine-tuned with
      :data:`~remap_lib.training.transfer.REHEARSAL_RATIO` synthetic training spectra per observed
      star mixed into every epoch (issue 12), so that the giant regime the dwarfs never show is not
      forgotten; otherwise as deep-REMAP. It is part of remap's recipe (:data:`SHIPPED_ROW`); the
      ``deep-REMAP`` row keeps the paper's recipe, without rehearsal. ``synthetic rehearsal (ratio
      0.5)`` rehearses twice as much. Its runs also give ``synthetic rehearsal, coverage calibration``
      (as ``coverage calibration`` for deep-REMAP) and ``synthetic rehearsal at S/N 20`` and ``at S/N
      10``: the same networks on copies of the held-out and giant stars degraded to that S/N, the
      same noise per star for every row and seed (:mod:`remap_lib.evaluation.degrade`).
    * ``giant distillation``: synthetic rehearsal plus
      :data:`~remap_lib.training.transfer.DISTILL_RATIO` unlabelled giant-candidate spectra per
      observed star in every epoch, taught the start network's own PMFs (learning without
      forgetting; the giants' labels are never read), paired with ``synthetic rehearsal``, as are
      its ``at S/N`` rows with rehearsal's. The giants it is scored on are the spectra it distils
      (transductive, as the issue allows: their spectra, not their labels).
    * ``giant distillation + noise-matched augmentation``: giant distillation fine-tuned with the
      noise-matched augmentation, which noises the distilled giants' spectra too; paired with ``giant
      distillation``, its ``at S/N`` rows with distillation's.
    * ``giant distillation + noise-matched augmentation, giants held out``: the same recipe, but fold k
      distils only the other folds' giants and is scored on its own, so every giant is scored by
      networks that never saw its spectrum (inductive, where the rows above are transductive); paired
      with ``giant distillation + noise-matched augmentation``.
    * ``giant distillation + noise-matched augmentation, log g only``: the same recipe, but the giants'
      spectra teach only the start network's log g PMFs, so their Teff and [Fe/H] heads learn from the
      labelled dwarfs and the grid alone; ``..., Teff and log g only`` teaches Teff as well, leaving
      [Fe/H] alone: remap's recipe (:data:`SHIPPED_ROW`, :data:`~remap_lib.training.transfer.DISTILLED_LABELS`).
      Both are paired with ``giant distillation + noise-matched augmentation``, as are their ``at S/N``
      rows with that row's.
    * ``giant distillation + noise-matched augmentation, Teff and log g only, targets twice as wide``:
      remap's recipe with the fine-tuning stars' soft targets twice the literature widths
      (:data:`WIDE_TARGETS`), paired with the recipe; ``..., no SWA in fine-tuning``: the recipe fine-tuned
      without stochastic weight averaging, paired with the recipe; ``..., SWA batch norm on the training mix``:
      the recipe with the SWA average's batch-norm statistics recomputed on an epoch's mix of dwarfs, grid
      and giant spectra instead of the dwarfs alone, paired with the recipe, as are its ``at S/N`` rows with
      the recipe's; ``..., features aligned``: the recipe with a class-conditional MMD between the features of
      each batch's rehearsed grid spectra and its observed ones (:data:`ALIGN_WEIGHT`), paired with the recipe;
      ``..., backbone frozen``: the recipe with the stem and backbone frozen for the whole of fine-tuning
      (:data:`FROZEN_THROUGHOUT`), so that only the heads and the embedding learn, paired with the recipe.
    * ``synthetic rehearsal, conformal intervals``, ``giant distillation, conformal intervals``,
      ``giant distillation + noise-matched augmentation, conformal intervals`` and the same for ``...,
      Teff and log g only``:
      the source row's predictions with each level's intervals scaled about the median for the stars
      called dwarfs, fold k by factors fitted on the other folds' held-out dwarfs
      (:mod:`remap_lib.evaluation.conformal`). The aggregate computes them from the source's records;
      no run records them. ``synthetic rehearsal at S/N 20, conformal intervals`` (and 10), and the same for
      remap's recipe, do the same on the noisy copies, so their factors are what a star of that S/N needs
      (the recipe's are those the shipped model carries, here measured out of fold).
    * ``giant distillation + noise-matched augmentation, Teff and log g only, PMF mean as the estimate``:
      remap's recipe with each PMF's mean, not its median, as the point estimate (:data:`PMF_MEAN`);
      intervals and networks unchanged, paired with the recipe. The aggregate computes it from the
      recipe's records (those that hold the mean).
    * ``noise-matched augmentation``: synthetic rehearsal fine-tuned with
      :data:`~remap_lib.training.transfer.NOISE_MATCHED_AUGMENT` (noise down to S/N 5; issue 13),
      paired with ``synthetic rehearsal``; its ``at S/N 20`` / ``at S/N 10`` rows are paired with
      rehearsal's.
    * ``MSE regression CNN``: the pretrained MSE twin fine-tuned the same way (no triplet term),
      as many members (predictions averaged); its 68/95 % intervals are ±1/±1.96 times the rms
      residual on the fold's temperature stars (a Gaussian interval calibrated inside the fold).
    * ``The Cannon`` (trained on all the fold's training stars) and ``chi2 grid fit`` (no training
      on MILES; it predicts the giants once, in fold 0, since it does not depend on the fold):
      deterministic, one seed; intervals from their own σ estimates (rows without one are left out
      of the coverage).
    * Reduced budget (07_ablations ``default``: 20 pretraining and 20 fine-tuning epochs of a
      smaller network): ``deep-REMAP (reduced budget)`` and the ablations that change pretraining
      as well, ``no cost matrix`` (the issue's "cross-entropy without the cost matrix"),
      ``no focal term``, ``no triplet``, ``no SWA`` (each one change from
      :data:`remap_lib.evaluation.ablation.VARIANTS`, in pretraining and fine-tuning), and ``no pretraining``
      (the reduced network trained on the fold's stars from random weights for as many epochs as
      the other rows pretrain plus fine-tune), and ``grid lines as wide as MILES's (reduced budget)``
      (pretrained on the grid degraded with the pixel in the LSF, then fine-tuned on the same dwarfs,
      :data:`PIXEL_LSF`), and ``labels between the grid nodes (reduced budget)`` (pretrained with grid spectra
      interpolated between neighbouring nodes, :data:`OFF_LATTICE`), and ``larger network (reduced budget)``
      (the network the profile pretrains in notebook 2, trained for the reduced budget's epochs, :data:`LARGER`), and
      ``paper-profile network (reduced budget)`` (the ``paper`` profile's, larger again, :data:`PAPER_SIZED`).
      Seeds are pretraining seeds (the fine-tuning seed follows). Each is paired with ``deep-REMAP
      (reduced budget)``.

Every row names its reference (:class:`Row`): ``noise-matched augmentation`` and rehearsal's
derived rows are paired with ``synthetic rehearsal``, the noise row's ``at S/N`` rows with
rehearsal's at the same S/N, the rest with ``deep-REMAP``. Rows state their own rehearsal and
noise: the profile's ``rehearsal``, ``noise_snr_min`` and ``distill`` (what notebook 03 ships) are not
read, so a profile that changes them changes notebook 03 but no row of the study.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.ablation import VARIANTS
from remap_lib.training.transfer import DISTILL_RATIO, LITERATURE_SIGMA, NOISE_MATCHED_AUGMENT, REHEARSAL_RATIO

FULL = "deep-REMAP"
REDUCED = "deep-REMAP (reduced budget)"
REHEARSAL = "synthetic rehearsal"
#: Twice the default ratio: does more rehearsal keep more giants giant, and what does it cost the dwarfs?
REHEARSAL_MORE = f"synthetic rehearsal (ratio {2 * REHEARSAL_RATIO:g})"
COVERAGE = "coverage calibration"
#: Each level's intervals scaled about the median to cover as stated, fold k's factors fitted on the
#: other folds' held-out dwarfs (:mod:`remap_lib.evaluation.conformal`; computed by the aggregate).
CONFORMAL = "conformal intervals"
#: Fine-tuning with noise drawn down to the S/N users have, not only 80-400 (issue 13): the rehearsal
#: recipe otherwise, so the row isolates the augmentation.
NOISE = "noise-matched augmentation"
#: Rehearsal plus learning without forgetting on the giant candidates' unlabelled spectra (issue 12):
#: their targets are the pretrained network's PMFs, which call 94 % of them giant before fine-tuning.
DISTILL = "giant distillation"
#: Distillation with the noise-matched augmentation (issues 12 and 13): the giants' spectra are
#: augmented too, so the network also sees noisy giants, taught the pretrained network's PMFs for the
#: clean spectrum; does that remove the cost noise-matched fine-tuning has on the giants?
NOISE_DISTILL = f"{DISTILL} + {NOISE}"
#: The shipped recipe's distillation scored on giants it never saw: fold k distils the other folds'
#: giants only (:func:`~remap_lib.evaluation.folds.giant_folds`). Paired with the row that distils them all,
#: it measures how much of distillation's gain on the giants is owed to having seen their spectra.
NOISE_DISTILL_HELD_OUT = f"{NOISE_DISTILL}, giants held out"
#: The shipped recipe with the giants teaching log g alone (issue 12): the giant call, which distillation
#: is there for, is the log g head's, while the pretrained network's Teff and [Fe/H] on the giants carry the
#: synthetic grid's offsets. Does distilling those as well cost the giants, or the dwarfs, accuracy?
LOGG_ONLY = ("logg",)
NOISE_DISTILL_LOGG = f"{NOISE_DISTILL}, log g only"
#: The same with Teff taught too: the pretrained network's Teff on the giants beats what the dwarfs teach,
#: while its [Fe/H] on them is offset (the row above separates the two).
TEFF_LOGG = ("teff", "logg")
NOISE_DISTILL_TEFF_LOGG = f"{NOISE_DISTILL}, Teff and log g only"
#: remap's recipe with the fine-tuning stars' soft targets twice as wide (issue 12, label-noise-aware
#: targets): MILES's literature labels are compilations whose errors are not smaller than the 70 K /
#: 0.15 / 0.08 dex the recipe assumes, and a target narrower than its label's error pulls the network
#: towards that error. Twice, fixed before the row ran (no width was tried on the study's stars).
WIDE_TARGETS = tuple(2.0 * s for s in LITERATURE_SIGMA)
NOISE_DISTILL_WIDE = f"{NOISE_DISTILL}, Teff and log g only, targets twice as wide"
#: remap's recipe fine-tuned without stochastic weight averaging (issue 12): at the reduced budget, the
#: "no SWA" row's networks scatter less on the dwarfs (Teff) and the giants (log g) and on the grid's
#: held-out nodes than with SWA; does that hold for fine-tuning at the default budget? The pretrained
#: network is the shipped one (with SWA), so the row isolates fine-tuning's SWA.
NOISE_DISTILL_NO_SWA = f"{NOISE_DISTILL_TEFF_LOGG}, no SWA in fine-tuning"
#: remap's recipe with the SWA average's batch-norm statistics recomputed on an epoch's mix of dwarfs,
#: rehearsed grid spectra and distilled giants, the batches its weights were trained on, instead of the dwarfs
#: alone (issue 12). Without SWA (the row above) the statistics are the running mean over those mixed batches,
#: so that row changed two things at once; this one separates them.
NOISE_DISTILL_SWA_BN = f"{NOISE_DISTILL_TEFF_LOGG}, SWA batch norm on the training mix"
#: remap's recipe with the backbone's features of synthetic and observed spectra aligned (issue 12, domain
#: alignment): a class-conditional MMD (:mod:`remap_lib.nn.alignment`), dwarfs with dwarfs and giants with giants,
#: between each batch's rehearsed grid spectra and its observed ones (the labelled dwarfs, and the giant
#: candidates by the start network's reading), weighted :data:`ALIGN_WEIGHT`. One, the weight of Long et al.'s
#: adaptation term, fixed before the row ran (no other weight was tried on the study's stars).
ALIGN_WEIGHT = 1.0
NOISE_DISTILL_ALIGN = f"{NOISE_DISTILL_TEFF_LOGG}, features aligned"
#: remap's recipe with the pretrained backbone frozen for the whole of fine-tuning (issue 12, "try freezing more"):
#: the recipe freezes it for 5 epochs and then trains it at a tenth of the heads' rate; here only the heads and
#: the embedding learn, from the pretrained features of the observed spectra, so nothing the backbone learnt on
#: the grid can be forgotten. SWA's batch-norm pass still recomputes the statistics on the dwarfs, as in the
#: recipe. Frozen throughout: more epochs than any fine-tuning runs.
FROZEN_THROUGHOUT = 10_000
NOISE_DISTILL_FROZEN = f"{NOISE_DISTILL_TEFF_LOGG}, backbone frozen"
#: remap's recipe read with each PMF's mean as the estimate instead of its median (issue 12, the error tail): the
#: same networks and intervals, only the point estimate changes. A dwarf whose PMF puts some mass at giant
#: values keeps its median at one mode or jumps to the other; the mean, the estimate that minimises the
#: expected squared error under the PMF, moves in proportion. Computed by the aggregate from the recipe's
#: records that hold the mean.
PMF_MEAN = f"{NOISE_DISTILL_TEFF_LOGG}, PMF mean as the estimate"
#: The row whose recipe builds the shipped model (notebook 3's defaults in the ``default`` profile,
#: :data:`~remap_lib.training.transfer.DISTILLED_LABELS`): the conformal factors the model ships are fitted
#: on its cross-validated predictions.
SHIPPED_ROW = NOISE_DISTILL_TEFF_LOGG
#: Paired comparisons beyond each row's reference: remap's recipe against the peers issue 12 asks it to beat
#: (same folds and stars; same seeds where both have several, else the stars alone are resampled).
PEER_COMPARISONS = ((SHIPPED_ROW, "MSE regression CNN"), (SHIPPED_ROW, "The Cannon"))
#: The grid's lines made as wide as MILES's (issue 12): the training file's grid is degraded with a 2.5 Å
#: Gaussian and then averaged over the 0.9 Å pixels, which leaves its lines ~3 % wider than MILES's 2.5 Å
#: if that width holds MILES's pixels (measured: 5.4 % on the dwarfs, 3.5 % on the giants,
#: results/line_width.json). Pretrained at the reduced budget on the grid degraded with the pixel in the
#: LSF, fine-tuned on the same dwarfs (the reduced rows rehearse nothing), paired with ``deep-REMAP
#: (reduced budget)``.
PIXEL_LSF = "grid lines as wide as MILES's (reduced budget)"
#: Labels between the grid's nodes (issue 12, off-lattice training labels against the error tail): pretrained
#: at the reduced budget with each grid spectrum of a batch replaced, with probability one half, by an
#: interpolation between its node and a lattice neighbour (:mod:`remap_lib.training.nodemix`), then fine-tuned
#: as ``deep-REMAP (reduced budget)``, with which it is paired. One half: fixed before the row ran (no other
#: value was tried on the study's stars).
OFF_LATTICE = "labels between the grid nodes (reduced budget)"
OFF_LATTICE_MIX = 0.5
#: The pretraining networks a reduced-budget row may train instead of the ablations' smaller one (:attr:`Row.network`):
#: the one the profile itself pretrains (notebook 2's), and the ``paper`` profile's.
PRETRAINING_NETWORK, PAPER_NETWORK = "pretraining", "paper"
#: A larger network (issue 12: "a larger network where the tail turns out to be a matter of capacity"): the reduced
#: budget's epochs with the network the profile pretrains (``default``: twice the channels and twice the residual
#: blocks per stage of the ablations' network), paired with ``deep-REMAP (reduced budget)``, so that only the
#: capacity differs. The default budget's own network cannot be grown and still be pretrained and fine-tuned for every
#: seed and fold on two cores; at the reduced budget the grid's held-out nodes are scored for both networks.
LARGER = "larger network (reduced budget)"
#: Larger again: the ``paper`` profile's network (twice the channels of the ``default`` profile's and three residual
#: blocks per stage) at the same reduced budget, paired with ``deep-REMAP (reduced budget)``: does capacity beyond what
#: the ``default`` profile trains keep helping?
PAPER_SIZED = "paper-profile network (reduced budget)"
#: Every paired comparison the aggregate makes beyond each row's reference: the peers, and the two larger networks
#: against each other (is the ``paper`` profile's network better than notebook 2's, on the same seeds?).
COMPARISONS = (*PEER_COMPARISONS, (PAPER_SIZED, LARGER))
#: S/N per pixel of the degraded copies the rehearsal and noise rows are also scored on (paired: the
#: same noise per star, :mod:`remap_lib.evaluation.degrade`); 20 and 10 bracket where the robustness
#: curves of the shipped model drift.
DEGRADED_SNR = (20.0, 10.0)


def at_snr(name: str, snr: float) -> str:
    """The derived row of ``name`` scored at S/N ``snr``."""
    return f"{name} at S/N {snr:g}"



@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # how it is run: ensemble, mse, cannon, chi2, reduced, scratch; "derived": comes with its source's runs
    reference: str | None  # the row it is compared with (paired differences)
    budget: str  # "default", "reduced" or "none" (no network training)
    seeds: str  # what a seed changes: "fine-tuning", "pretraining" or "none" (deterministic: seed 0 only)
    change: dict = field(default_factory=dict)  # TrainConfig changes, in pretraining and fine-tuning
    rehearsal: float = 0.0  # synthetic training spectra mixed into each fine-tuning epoch, per observed star
    distill: float = 0.0  # unlabelled giant-candidate spectra distilled into each fine-tuning epoch, per observed star
    source: str | None = None  # a derived row: the row whose runs yield it (None: deep-REMAP)
    snr: float | None = None  # a derived row scored on copies of the stars degraded to this S/N per pixel
    recipe: str | None = None  # a derived row: how its source's networks give it (:data:`RECIPES`)
    #: Fold k distils only the other folds' giants and is scored on its own (giants no network saw; the
    #: other distillation rows score the very spectra they distil): :func:`remap_lib.evaluation.folds.giant_folds`.
    giants_held_out: bool = False
    # the heads distillation teaches; every row states its own, so that a change of remap's default leaves
    # the rows (and their records) as they were run
    distill_labels: tuple[str, ...] = LABEL_NAMES
    #: Learn from the grid degraded so that its lines, pixel included, are the instrument's FWHM wide
    #: (:func:`remap_lib.spectra.preprocess.kernel_fwhm`), not the training file's grid.
    pixel_in_lsf: bool = False
    #: TrainConfig changes in pretraining only (``change`` applies to fine-tuning as well).
    pretrain_change: dict = field(default_factory=dict)
    #: A reduced-budget row that trains a pretraining network instead of the ablations' smaller one:
    #: :data:`PRETRAINING_NETWORK` or :data:`PAPER_NETWORK`
    #: (:meth:`~remap_lib.evaluation.studybudgets.Budgets.arch_for`).
    network: str | None = None

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.name).strip("_").lower()

    @property
    def pretrains(self) -> bool:
        return self.kind == "reduced"


#: Every row in the order of the tables; the cheapest rows run first (:data:`RUN_ORDER`).
ROWS: tuple[Row, ...] = (
    Row(FULL, "ensemble", None, "default", "fine-tuning"),
    Row("MSE regression CNN", "mse", FULL, "default", "fine-tuning"),
    Row(REHEARSAL, "ensemble", FULL, "default", "fine-tuning", rehearsal=REHEARSAL_RATIO),
    Row(REHEARSAL_MORE, "ensemble", FULL, "default", "fine-tuning", rehearsal=2 * REHEARSAL_RATIO),
    Row(NOISE, "ensemble", REHEARSAL, "default", "fine-tuning", {"augment": NOISE_MATCHED_AUGMENT},
        rehearsal=REHEARSAL_RATIO),
    Row(DISTILL, "ensemble", REHEARSAL, "default", "fine-tuning", rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO),
    Row(f"{REHEARSAL}, {COVERAGE}", "derived", REHEARSAL, "default", "fine-tuning", rehearsal=REHEARSAL_RATIO,
        source=REHEARSAL, recipe="coverage temperatures"),
    *(Row(f"{name}, {CONFORMAL}", "derived", name, "default", "fine-tuning", rehearsal=REHEARSAL_RATIO,
          distill=distill, source=name, recipe="cross-fold conformal", distill_labels=labels)
      for name, distill, labels in ((REHEARSAL, 0.0, LABEL_NAMES), (DISTILL, DISTILL_RATIO, LABEL_NAMES),
                                    (NOISE_DISTILL, DISTILL_RATIO, LABEL_NAMES),
                                    (NOISE_DISTILL_TEFF_LOGG, DISTILL_RATIO, TEFF_LOGG),
                                    (NOISE_DISTILL_NO_SWA, DISTILL_RATIO, TEFF_LOGG),
                                    (NOISE_DISTILL_SWA_BN, DISTILL_RATIO, TEFF_LOGG),
                                    (NOISE_DISTILL_ALIGN, DISTILL_RATIO, TEFF_LOGG))),
    # the factors a faint star's intervals need, fitted on noisy copies of the other folds' dwarfs: for
    # rehearsal, and for remap's recipe, whose factors at these S/N the shipped model carries (issue 13)
    *(Row(f"{at_snr(name, snr)}, {CONFORMAL}", "derived", at_snr(name, snr), "default", "fine-tuning",
          rehearsal=REHEARSAL_RATIO, distill=distill, distill_labels=labels, source=at_snr(name, snr), snr=snr,
          recipe="cross-fold conformal")
      for name, distill, labels in ((REHEARSAL, 0.0, LABEL_NAMES), (NOISE_DISTILL_TEFF_LOGG, DISTILL_RATIO, TEFF_LOGG))
      for snr in DEGRADED_SNR),
    *(Row(at_snr(REHEARSAL, snr), "derived", REHEARSAL, "default", "fine-tuning", rehearsal=REHEARSAL_RATIO,
          source=REHEARSAL, snr=snr, recipe="degraded") for snr in DEGRADED_SNR),
    *(Row(at_snr(NOISE, snr), "derived", at_snr(REHEARSAL, snr), "default", "fine-tuning", rehearsal=REHEARSAL_RATIO,
          source=NOISE, snr=snr, recipe="degraded") for snr in DEGRADED_SNR),
    *(Row(at_snr(DISTILL, snr), "derived", at_snr(REHEARSAL, snr), "default", "fine-tuning",
          rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO, source=DISTILL, snr=snr, recipe="degraded")
      for snr in DEGRADED_SNR),
    Row(NOISE_DISTILL, "ensemble", DISTILL, "default", "fine-tuning", {"augment": NOISE_MATCHED_AUGMENT},
        rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO),
    *(Row(at_snr(NOISE_DISTILL, snr), "derived", at_snr(DISTILL, snr), "default", "fine-tuning",
          rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO, source=NOISE_DISTILL, snr=snr, recipe="degraded")
      for snr in DEGRADED_SNR),
    Row(NOISE_DISTILL_HELD_OUT, "ensemble", NOISE_DISTILL, "default", "fine-tuning", {"augment": NOISE_MATCHED_AUGMENT},
        rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO, giants_held_out=True),
    *(row for name, labels in ((NOISE_DISTILL_LOGG, LOGG_ONLY), (NOISE_DISTILL_TEFF_LOGG, TEFF_LOGG)) for row in (
        Row(name, "ensemble", NOISE_DISTILL, "default", "fine-tuning", {"augment": NOISE_MATCHED_AUGMENT},
            rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO, distill_labels=labels),
        *(Row(at_snr(name, snr), "derived", at_snr(NOISE_DISTILL, snr), "default", "fine-tuning",
              rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO, distill_labels=labels, source=name, snr=snr,
              recipe="degraded") for snr in DEGRADED_SNR))),
    Row(NOISE_DISTILL_WIDE, "ensemble", NOISE_DISTILL_TEFF_LOGG, "default", "fine-tuning",
        {"augment": NOISE_MATCHED_AUGMENT, "label_sigma": WIDE_TARGETS}, rehearsal=REHEARSAL_RATIO,
        distill=DISTILL_RATIO, distill_labels=TEFF_LOGG),
    Row(NOISE_DISTILL_NO_SWA, "ensemble", NOISE_DISTILL_TEFF_LOGG, "default", "fine-tuning",
        {"augment": NOISE_MATCHED_AUGMENT, "swa_start": 1.0}, rehearsal=REHEARSAL_RATIO,
        distill=DISTILL_RATIO, distill_labels=TEFF_LOGG),
    Row(NOISE_DISTILL_SWA_BN, "ensemble", NOISE_DISTILL_TEFF_LOGG, "default", "fine-tuning",
        {"augment": NOISE_MATCHED_AUGMENT, "swa_bn_rows": "epoch"}, rehearsal=REHEARSAL_RATIO,
        distill=DISTILL_RATIO, distill_labels=TEFF_LOGG),
    # the same networks on the noisier copies, paired with the recipe's: what a shipped model needs for its
    # interval factors at low S/N (remap_lib.evaluation.conformal)
    *(Row(at_snr(NOISE_DISTILL_SWA_BN, snr), "derived", at_snr(NOISE_DISTILL_TEFF_LOGG, snr), "default",
          "fine-tuning", rehearsal=REHEARSAL_RATIO, distill=DISTILL_RATIO, distill_labels=TEFF_LOGG,
          source=NOISE_DISTILL_SWA_BN, snr=snr, recipe="degraded") for snr in DEGRADED_SNR),
    Row(NOISE_DISTILL_ALIGN, "ensemble", NOISE_DISTILL_TEFF_LOGG, "default", "fine-tuning",
        {"augment": NOISE_MATCHED_AUGMENT, "align_weight": ALIGN_WEIGHT}, rehearsal=REHEARSAL_RATIO,
        distill=DISTILL_RATIO, distill_labels=TEFF_LOGG),
    Row(NOISE_DISTILL_FROZEN, "ensemble", NOISE_DISTILL_TEFF_LOGG, "default", "fine-tuning",
        {"augment": NOISE_MATCHED_AUGMENT, "freeze_epochs": FROZEN_THROUGHOUT}, rehearsal=REHEARSAL_RATIO,
        distill=DISTILL_RATIO, distill_labels=TEFF_LOGG),
    Row(PMF_MEAN, "derived", NOISE_DISTILL_TEFF_LOGG, "default", "fine-tuning", rehearsal=REHEARSAL_RATIO,
        distill=DISTILL_RATIO, distill_labels=TEFF_LOGG, source=NOISE_DISTILL_TEFF_LOGG, recipe="pmf mean"),
    Row("no temperature scaling", "derived", FULL, "default", "fine-tuning", recipe="no temperatures"),
    Row(COVERAGE, "derived", FULL, "default", "fine-tuning", recipe="coverage temperatures"),
    Row("one member", "derived", FULL, "default", "fine-tuning", recipe="first member"),
    Row("pretrained only", "derived", FULL, "default", "fine-tuning", recipe="pretrained network"),
    Row("The Cannon", "cannon", FULL, "none", "none"),
    Row("chi2 grid fit", "chi2", FULL, "none", "none"),
    Row(REDUCED, "reduced", FULL, "reduced", "pretraining"),
    Row("no cost matrix", "reduced", REDUCED, "reduced", "pretraining", VARIANTS["no cost matrix"]),
    Row("no focal term", "reduced", REDUCED, "reduced", "pretraining", VARIANTS["focal loss -> cross-entropy"]),
    Row("no triplet", "reduced", REDUCED, "reduced", "pretraining", VARIANTS["no triplet loss"]),
    Row("no SWA", "reduced", REDUCED, "reduced", "pretraining", VARIANTS["no SWA"]),
    Row("no pretraining", "scratch", REDUCED, "reduced", "pretraining"),
    Row(PIXEL_LSF, "reduced", REDUCED, "reduced", "pretraining", pixel_in_lsf=True),
    Row(OFF_LATTICE, "reduced", REDUCED, "reduced", "pretraining", pretrain_change={"node_mix": OFF_LATTICE_MIX}),
    Row(LARGER, "reduced", REDUCED, "reduced", "pretraining", network=PRETRAINING_NETWORK),
    Row(PAPER_SIZED, "reduced", REDUCED, "reduced", "pretraining", network=PAPER_NETWORK),
)
ROW_BY_NAME = {r.name: r for r in ROWS}
#: How a derived row comes from its source's networks: degraded copies of the stars, T = 1, member 0
#: alone, the start network with its own temperatures, one coverage-fitted temperature per label; the
#: aggregate's: cross-fold conformal intervals, the PMF's mean as the estimate.
RECIPES = ("degraded", "no temperatures", "first member", "pretrained network", "coverage temperatures",
           "cross-fold conformal", "pmf mean")
#: Recipes the aggregate applies to the source's records (:mod:`remap_lib.evaluation.studystats`): the runs
#: record nothing for them.
AGGREGATE_RECIPES = ("cross-fold conformal", "pmf mean")
#: Run row -> the derived rows its runs yield.
DERIVED_FROM = {r.name: tuple(d.name for d in ROWS if d.kind == "derived" and (d.source or FULL) == r.name
                              and d.recipe not in AGGREGATE_RECIPES)
                for r in ROWS if r.kind != "derived"}
#: Run order within a seed, cheapest first (measured: see `remap study status`).
RUN_ORDER = ("chi2 grid fit", "The Cannon", "no pretraining", REDUCED, "no cost matrix", "no focal term",
             "no triplet", "no SWA", PIXEL_LSF, OFF_LATTICE, LARGER, PAPER_SIZED,
             "MSE regression CNN", FULL, REHEARSAL, REHEARSAL_MORE, NOISE, DISTILL,
             NOISE_DISTILL, NOISE_DISTILL_HELD_OUT, NOISE_DISTILL_LOGG, NOISE_DISTILL_TEFF_LOGG, NOISE_DISTILL_WIDE,
             NOISE_DISTILL_NO_SWA, NOISE_DISTILL_SWA_BN, NOISE_DISTILL_ALIGN, NOISE_DISTILL_FROZEN)


def run_row(name: str) -> str:
    """The row whose runs yield ``name``: itself, or its derived rows' source, followed to a run row."""
    row = ROW_BY_NAME[name]
    while row.kind == "derived":
        row = ROW_BY_NAME[row.source or FULL]
    return row.name


def unknown_row(name: str):
    raise ValueError(f"unknown study row {name!r}; rows (or their slugs): "
                     + ", ".join(f"{r.name!r} ({r.slug})" for r in ROWS))
