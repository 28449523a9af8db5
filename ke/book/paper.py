"""What the paper reports: numbers of Tables 1-2, ranges and claims of the figures, and the published pretraining
recipes of the three models it studies. Drawn beside our results in the book; never used to choose or tune anything.
The only place in the project that holds the paper's numbers."""
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperModel:
    """A model the paper studies, with its published pretraining recipe (for the regime numbers)."""
    label: str
    layers: int
    ffn_dim: int                 # m: memory slots per layer
    final_step: int              # the paper's "100%"
    steps: int                   # optimizer updates of the schedule
    tokens_per_step: int         # global batch x sequence length
    lr: float
    weight_decay: float
    warmup_steps: int
    lr_shape: str                # cosine | linear
    non_embedding_params: int    # layers x (4 d^2 attention + FFN matrices)
    warmup_start: float = 0.0
    lr_floor: float = 0.1
    source: str = ""


PAPER_MODELS = {
    # allenai/OLMo configs/official/OLMo-1B.yaml: d 2048, 16 layers, SwiGLU m 8192, lr 4e-4, wd 0.1,
    # cosine_with_warmup (t_warmup 2000 from 0.1 x lr, alpha_f 0.1), 739,328 steps of 2048 x 2048 tokens (3.1T).
    "olmo-1b": PaperModel("OLMo-1B", 16, 8192, 738_020, 739_328, 2048 * 2048, 4e-4, 0.1, 2000, "cosine",
                          16 * (4 * 2048**2 + 3 * 2048 * 8192), warmup_start=0.1, source="allenai/OLMo configs/official/OLMo-1B.yaml"),
    # allenai/OLMo configs/official/OLMo-7B.yaml: d 4096, 32 layers, SwiGLU m 11008, lr 3e-4, wd 0.1,
    # linear_with_warmup (t_warmup 5000, alpha_f 0.1), batch 2048 x 2048; the paper's final checkpoint is 557k.
    "olmo-7b": PaperModel("OLMo-7B", 32, 11008, 557_000, 557_000, 2048 * 2048, 3e-4, 0.1, 5000, "linear",
                          32 * (4 * 4096**2 + 3 * 4096 * 11008), warmup_start=0.1, source="allenai/OLMo configs/official/OLMo-7B.yaml"),
    # EleutherAI/pythia models/1.4B/pythia-1.4b.yml: d 2048, 24 layers, GELU m 8192, lr 2e-4 (min 2e-5), wd 0.1,
    # cosine, warmup 1%, 143,000 steps of 1024 x 2048 tokens (300B).
    "pythia-1.4b": PaperModel("Pythia-1.4B", 24, 8192, 143_000, 143_000, 1024 * 2048, 2e-4, 0.1, 1430, "cosine",
                              24 * (4 * 2048**2 + 2 * 2048 * 8192), source="EleutherAI/pythia models/1.4B/pythia-1.4b.yml"),
}

CHECKPOINTS_1B = [118_000, 369_000, 554_000, 738_000]  # the columns of Tables 1-2 (OLMo-1B steps)
FINAL_STEP = {"OLMo-1B": 738_020, "OLMo-7B": 557_000}

# Table 1 (A and F, %) and Table 2 (K and P after continual learning), OLMo-1B, columns CHECKPOINTS_1B.
TABLE_ROWS = {
    "baseline": "(a) Baseline",
    "batch_x16": "(b) BS: 128 → 2048",
    "lr_x2.5": "(c) lr: 4e-4 → 1e-3",
    "lr_div4": "(d) lr: 4e-4 → 1e-4",
    "epochs_3": "(e) ep: 1 → 3",
}
TABLE1_A = {"baseline": [25.2, 24.8, 21.4, 18.8], "batch_x16": [8.9, 7.8, 1.0, -92.2],
            "lr_x2.5": [17.3, 15.7, 10.7, 5.0], "lr_div4": [21.6, 23.0, 23.7, 22.6], "epochs_3": [28.8, 28.0, 25.9, 24.5]}
TABLE1_F = {"baseline": [10.5, 12.9, 17.0, 19.5], "batch_x16": [2.2, 3.5, 5.5, 44.9],
            "lr_x2.5": [16.7, 20.3, 23.0, 23.5], "lr_div4": [2.4, 3.2, 4.6, 7.3], "epochs_3": [14.8, 17.4, 20.1, 23.1]}
TABLE2_K = {"baseline": [-0.281, -0.280, -0.293, -0.301], "batch_x16": [-0.342, -0.344, -0.368, -0.714],
            "lr_x2.5": [-0.310, -0.314, -0.332, -0.353], "lr_div4": [-0.294, -0.287, -0.284, -0.287],
            "epochs_3": [-0.267, -0.268, -0.276, -0.280]}
TABLE2_P = {"baseline": [54.0, 54.6, 52.8, 52.0], "batch_x16": [59.0, 60.5, 60.1, 35.6],
            "lr_x2.5": [50.3, 49.9, 49.0, 49.4], "lr_div4": [58.9, 60.7, 60.6, 59.9], "epochs_3": [51.4, 51.7, 50.8, 49.7]}
# Implied by inverting Tables 1-2 (Eqs. 4-5 solved for K_PT and P_PT; not printed in the paper).
IMPLIED_K_PT = [-0.375, -0.373, -0.372, -0.371]
IMPLIED_P_PT = [60.3, 62.7, 63.6, 64.6]

CORRELATION = {"entropy_vs_acquisition": 0.94, "entropy_vs_forgetting": -0.96}  # Pearson r (footnote 11)
CORRELATION_P = {"entropy_vs_acquisition": "6e-5", "entropy_vs_forgetting": "1e-5"}

# Fig. 13: A at the latest start minus A at the earliest (%p), OLMo-1B, per continual corpus.
FIG13_A_CHANGE = {"pubmed": -6.4, "c4": -3.4}

# Fig. 2: OLMo-1B's knowledge entropy at its first and last checkpoint (nats, read off the axis).
FIG2_OLMO1B = (144.0, 143.6)

# Section 4's continual-learning recipe (OLMo-1B).
CONTINUAL_RECIPE = "1,600 updates of 128 × 1,024 tokens, lr 4e-4, 10 injections, 70 paraphrase and 60 once paragraphs"

# Per figure: what the paper shows, in one or two sentences, and the y-range read off its axes.
FIGURES = {
    "fig1": "Schematic: coefficient distributions become sparser from the initial to the final stage.",
    "fig2": "Knowledge entropy decreases consistently along pretraining for OLMo-1B (143.6-144.0 nats, maximum "
            "16 ln 8192 = 144.18) and OLMo-7B (297.0-297.6, maximum 297.80).",
    "fig3": "Attention entropy (sum over 16 layers, about 40-70) falls sharply early, then slowly; next-token "
            "entropy (about 2.4-2.8) falls consistently.",
    "fig6": "Pythia-1.4B's knowledge entropy also decreases along its checkpoints (143.4-143.7).",
    "fig7": "The decrease is the same when measured on Dolma, C4 or PubMed (143.3-143.9).",
    "fig8": "Every layer's entropy decreases, the last layer the most (1B: 8.88-9.00 per layer).",
    "fig9": "The ReLU-style coefficient gives the same decreasing trend as |SwiGLU| (143.2-144.0).",
}

# Section 5 and App. B.6-B.8: what the paper reports for each resuscitation experiment.
RESUSCITATION = {
    "fig1": "Raising the final checkpoint's knowledge entropy (the star) raises both knowledge acquisition and "
            "retention in continual learning.",
    "fig5": "OLMo-1B at 738k, p = 50%: q ≥ 1 generally improves acquisition and retention over the original "
            "(A = 18.8%, F = 19.5%, K = −0.301, P = 52.0%); q = 0.5 makes both worse. Its axes (A up to ~70%, "
            "negative F) suggest A and F relative to the modified model's own step 0 (inferred).",
    "fig15": "q = 1 (the lowest p% lifted to the layer mean): a larger p generally helps, but p too high (90%) hurts, "
             "'likely due to reducing the parameters in already active regions'.",
    "fig16": "p = 50%, q = 2: the benefit grows for later checkpoints; end performance deteriorates when resuscitation "
             "is applied to the initial (118k) and mid (369k) models; the resuscitated final model still "
             "underperforms the original mid-stage model.",
    "fig17": "Performance deteriorates with resuscitation at 369k and improves with larger q at 554k.",
    "fig18": "Attention temperature T = 1.5-3.0: FFN resuscitation (p = 50%, q = 2) consistently gives the highest "
             "acquisition and generally the best retention, for both K and P, better than any temperature.",
}
