"""The paper's claims as code: the paper's own numbers satisfy the paper's claims, a reversed series fails them,
and the verdict vocabulary is the same everywhere (ke.book.claims)."""
import dataclasses
import json

from ke.book import chapter_continual as cc
from ke.book import chapter_resuscitation as cr
from ke.book import claims as C
from ke.book import paper
from ke.stats import spearman


def reversed_rows(rows, *columns):
    """The same starts with the values of `columns` in reverse order."""
    values = {c: [r[c] for r in rows][::-1] for c in columns}
    return [{**r, **{c: values[c][i] for c in columns}} for i, r in enumerate(rows)]


def test_trend_verdicts_follow_the_one_sided_tests():
    assert C.trend(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1) == C.AGREES
    assert C.trend(spearman([1, 2, 3, 4], [1, 2, 3, 4]), -1) == C.DISAGREES
    assert C.trend(spearman([1, 2, 3, 4], [1, 3, 2, 4]), -1) == C.NOT_SIGNIFICANT
    assert C.trend(spearman([1, 2], [2, 1]), -1) == C.NOT_TESTED


def test_checks_and_seeds():
    assert C.checks([True, True]) == C.AGREES and C.checks([False]) == C.DISAGREES
    assert C.checks([True, False, None, False]) == "partly (1 of 3)" and C.checks([None]) == C.NOT_TESTED
    assert C.over_seeds([C.AGREES] * 3) == C.AGREES
    assert C.over_seeds([C.AGREES, C.NOT_SIGNIFICANT, C.AGREES]) == "partly (2 of 3 seeds)"
    assert C.over_seeds([C.DISAGREES, C.NOT_SIGNIFICANT]) == C.NOT_SIGNIFICANT
    assert C.over_seeds([C.DISAGREES, C.NOT_SIGNIFICANT, C.DISAGREES]) == "disagrees (2 of 3 seeds)"
    assert C.over_seeds([C.DISAGREES, C.DISAGREES]) == C.DISAGREES


def test_a_verdict_carries_its_word_through_copies_and_json():
    split = C.over_seeds([C.DISAGREES, C.NOT_SIGNIFICANT, C.DISAGREES])
    assert split.word is C.Word.DISAGREES and split.count == "2 of 3 seeds"
    assert C.checks([True, False]).word is C.Word.PARTLY and C.over_seeds([C.AGREES, C.DISAGREES]).word is C.Word.PARTLY
    claim = C.Claim("Fig. 2", "x", "y", "z", split)
    copied = dataclasses.asdict(claim)["verdict"]          # asdict deep-copies: the word must survive
    assert copied == split and copied.word is C.Word.DISAGREES
    assert json.loads(json.dumps(dataclasses.asdict(claim)))["verdict"] == "disagrees (2 of 3 seeds)"
    assert C.emphasise(split) == "**disagrees (2 of 3 seeds)**" and C.emphasise(C.checks([True, False])) == "partly (1 of 2)"


def test_figure_4_trends_on_the_papers_numbers_and_reversed():
    rows = cc.paper_table("baseline")
    later_less = cc.start_trend_claim("Fig. 4", "later starts acquire less", rows, "A", -1)
    later_more_f = cc.start_trend_claim("Fig. 4", "later starts forget more", rows, "F", +1)
    assert later_less.verdict == C.AGREES and later_more_f.verdict == C.AGREES
    flipped = reversed_rows(rows, "A", "F")
    assert cc.start_trend_claim("Fig. 4", "", flipped, "A", -1).verdict == C.DISAGREES
    assert cc.start_trend_claim("Fig. 4", "", flipped, "F", +1).verdict == C.DISAGREES
    # Fig. 4(b): a mid-stage start gives the best end K and P, in the paper's Table 2a
    assert cc.mid_stage_claim("OLMo-1B", rows, "K").verdict == C.AGREES
    assert cc.mid_stage_claim("OLMo-1B", rows, "P").verdict == C.AGREES
    best_last = [{**r, "K_CL": -0.3 + 0.01 * i} for i, r in enumerate(rows)]
    assert cc.mid_stage_claim("x", best_last, "K").verdict == C.DISAGREES


def test_seed_claims_agree_only_if_every_seed_agrees():
    rows = cc.paper_table("baseline")
    agree = cc.seed_claim("Fig. 4", "later starts acquire less", {0: rows, 1: rows}, "A", -1)
    assert agree.verdict == C.AGREES
    mixed = cc.seed_claim("Fig. 4", "later starts acquire less", {0: rows, 1: reversed_rows(rows, "A")}, "A", -1)
    assert mixed.verdict == "partly (1 of 2 seeds)" and "seed 1" in mixed.ours


def test_hyperparameter_claims_on_the_papers_tables_and_reversed():
    tables = {s: cc.paper_table(s) for s in paper.TABLE_ROWS}
    verdicts = {c.statement: c.verdict for c in cc.hyperparameter_claims(tables)}
    assert len(verdicts) == 7
    # B.4.2 reads the tables as a pattern with one stated exception: the 738k run with batch 2048 collapsed
    # (F 44.9 > 19.5), so "milder forgetting" holds at 3 of the 4 starts
    assert verdicts.pop("larger batch → milder F") == "partly (3 of 4)"
    assert set(verdicts.values()) == {C.AGREES}
    # every setting's columns reversed against the baseline's: the claims fail
    flipped = {s: (rows if s == "baseline" else [{**r, "A": 2 * b["A"] - r["A"], "F": 2 * b["F"] - r["F"]}
                                                 for r, b in zip(rows, tables["baseline"])])
               for s, rows in tables.items()}
    verdicts = {c.statement: c.verdict for c in cc.hyperparameter_claims(flipped)}
    assert verdicts.pop("larger batch → milder F") == "partly (1 of 4)"
    assert set(verdicts.values()) == {C.DISAGREES}


def test_correlation_claim_on_a_series_with_the_papers_sign():
    joined = [{"entropy": e, "A": a, "F": f} for e, a, f in zip([144.0, 143.9, 143.8, 143.7, 143.6],
                                                                [25.2, 24.8, 22.0, 21.4, 18.8],
                                                                [10.5, 12.9, 15.0, 17.0, 19.5])]
    assert cc.correlation_claim({0: joined}, "A", +1).verdict == C.AGREES
    assert cc.correlation_claim({0: joined}, "F", -1).verdict == C.AGREES
    assert cc.correlation_claim({0: reversed_rows(joined, "A")}, "A", +1).verdict == C.DISAGREES


def outcome(a, f, k, p, a_u=None, f_u=None):
    return {"A": a, "F": f, "K": k, "P": p, "K_PT": -1.0, "P_PT": 50.0, "A_unmodified": a if a_u is None else a_u,
            "F_unmodified": f if f_u is None else f_u}


def test_resuscitation_claims_with_the_papers_pattern_and_reversed():
    """Figs. 16 and 18 as the paper describes them: resuscitation hurts early starts, helps the final one more,
    stays below the mid start; FFN resuscitation beats every attention temperature. Then the opposite pattern."""
    originals = {100: outcome(25, 10, -0.28, 54.0), 500: outcome(24, 13, -0.28, 54.6), 1000: outcome(19, 20, -0.30, 52.0)}
    paper_like = {100: outcome(22, 12, -0.29, 53.0), 500: outcome(23, 14, -0.285, 54.0), 1000: outcome(21, 18, -0.29, 52.5)}
    assert {c.verdict for c in cr.stage_claims(paper_like, originals, 1000)} == {C.AGREES}
    opposite = {100: outcome(26, 9, -0.27, 55.0), 500: outcome(25, 12, -0.27, 55.0), 1000: outcome(18, 21, -0.31, 51.0)}
    # hurting the final start while helping early ones also keeps it below the mid start: the last claim holds
    assert [c.verdict for c in cr.stage_claims(opposite, originals, 1000)] == [C.DISAGREES] * 3 + [C.AGREES]
    temperatures = {1.5: outcome(19, 20, -0.30, 51.9), 3.0: outcome(18, 21, -0.31, 51.5)}
    ffn = outcome(21, 18, -0.29, 52.5, a_u=20, f_u=19)
    assert {c.verdict for c in cr.temperature_claims(temperatures, ffn)} == {C.AGREES}
    worse = outcome(17, 22, -0.32, 51.0, a_u=16, f_u=23)
    assert {c.verdict for c in cr.temperature_claims(temperatures, worse)} == {C.DISAGREES}


def test_q_sweep_and_p_sweep_claims():
    original = outcome(18.8, 19.5, -0.301, 52.0)
    mids = {100: {0.5: outcome(20, 15, -0.29, 53.0), 2.0: outcome(21, 14, -0.288, 53.5)}}
    high = {200: {0.5: outcome(15, 22, -0.31, 51.0), 2.0: outcome(22, 15, -0.29, 52.5)}}
    claims = cr.mid_claims({**mids, **high}, {100: outcome(25, 10, -0.28, 54.0), 200: original})
    assert [c.verdict for c in claims] == [C.AGREES, C.AGREES]
    ratios = {0.1: outcome(19, 19, -0.30, 52.0), 0.5: outcome(22, 16, -0.29, 52.3), 0.9: outcome(10, 25, -0.35, 50.0)}
    assert [c.verdict for c in cr.ratio_claims(ratios)] == [C.AGREES, C.AGREES]
    ratios[0.9] = outcome(30, 5, -0.25, 55.0)
    assert cr.ratio_claims(ratios)[0].verdict == C.DISAGREES


def test_markdown_counts_verdicts_and_marks_disagreement():
    table = C.markdown([C.Claim("Fig. 2", "x", "y", "z", C.AGREES), C.Claim("Fig. 3", "x", "y", "z", C.DISAGREES)])
    assert "**disagrees**" in table and table.endswith("agrees: 1, disagrees: 1.")
