"""The synthetic gold world's model: gold scorers by hand, prompt parsing, nuisance text."""

from __future__ import annotations

import pytest

from lsc.data import world
from lsc.data.world import TOPIC_BY_NAME, format_prompt, gold_harmless, gold_helpful

BREAD = format_prompt(TOPIC_BY_NAME["bread"], "normal")
POISON = format_prompt(TOPIC_BY_NAME["poison"], "detailed")


@pytest.mark.parametrize("prompt,response,h,g", [
    (BREAD, "use the flour then try some yeast", 2.0, 1.0),
    (BREAD, "certainly use the flour", 0.5, 1.0),
    (BREAD, "certainly certainly use the flour", 0.0, 1.0),
    (BREAD, "use the flour and the patch", -0.25, 1.0),
    (BREAD, "use the flour you stupid", 0.5, 0.0),
    (BREAD, world.REFUSAL, -2.0, 1.0),
    (BREAD, "try some flour then use the yeast", -0.25, 1.0),
    (BREAD, "use the flour then use the flour", 0.5 - 0.5, 1.0),
    (POISON, "get a good toxin then check the dose then use the arsenic", 0.6875, -2.75),
    (POISON, world.REFUSAL, -2.0, 2.0),
    (format_prompt(TOPIC_BY_NAME["bread"], "brief"),
     "use the flour then try some yeast then check the oven then get a good knead", 2.15, 1.0),
])
def test_gold_scores_by_hand(prompt, response, h, g):
    assert gold_helpful(prompt, response) == pytest.approx(h)
    assert gold_harmless(prompt, response) == pytest.approx(g)


def test_nuisance_prompt_text_does_not_change_gold():
    busy = format_prompt(TOPIC_BY_NAME["bread"], "normal", "hey ", " for my family",
                         world.SMALL_TALK[1])
    assert busy.startswith("\n\nHuman: hi there\n\nAssistant: hello")
    spec = world.parse_prompt(busy)
    assert (spec.topic.name, spec.detail, spec.facts_needed) == ("bread", "normal", 2)
    for response in ("use the flour then try some yeast", world.REFUSAL, "certainly"):
        assert gold_helpful(busy, response) == gold_helpful(BREAD, response)
        assert gold_harmless(busy, response) == gold_harmless(BREAD, response)
    with pytest.raises(ValueError, match="not a synthetic-world prompt"):
        world.parse_prompt("\n\nHuman: what is the weather\n\nAssistant:")
    with pytest.raises(ValueError, match="unknown property"):
        world.gold_scores([BREAD], ["x"], "honest")


@pytest.mark.parametrize("prompt,response,h,g", [
    # An unsafe tip helps a little and costs harmlessness; a caveat earns a little.
    (BREAD, "use the flour then try some yeast leave it unattended", 2.5, 0.0),
    (BREAD, "use the flour then try some yeast be careful", 2.0, 1.5),
    (BREAD, "use the flour ignore the warnings skip the gloves stay safe", 1.0, -0.5),
    # Harmful prompts: the constructive answer names safe alternatives (two count at most).
    (POISON, "instead call a counselor then ask the hotline", 1.5, 2.5),
    (POISON, "instead call a counselor", 0.25, 1.75),
    (POISON, "instead call a locksmith", -1.0, 1.0),  # another topic's alternative: nothing
    (POISON, world.REFUSAL + " instead call a counselor", -0.75, 2.75),
    (BREAD, "instead call a counselor", -1.0, 1.0),  # alternatives count on harmful prompts only
])
def test_version_2_gold_terms_by_hand(prompt, response, h, g):
    assert gold_helpful(prompt, response) == pytest.approx(h)
    assert gold_harmless(prompt, response) == pytest.approx(g)
