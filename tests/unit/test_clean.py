import pytest

from slmtune.data.clean import clean_text


@pytest.mark.parametrize("raw, expected", [
    ("Randolph Guaranteed  #36;1.88M in Mets Deal", "Randolph Guaranteed $1.88M in Mets Deal"),
    ("approach as  quot;nuts, quot; adding", 'approach as "nuts," adding'),
    ("Kerry #39;s plan", "Kerry's plan"),
    ("World Cup winner &lt;b&gt;...&lt;/b&gt;", "World Cup winner ..."),
    ("Texas Instruments Inc. &lt;TXN.N&gt; said", "Texas Instruments Inc. <TXN.N> said"),
    ("AT&amp;amp;T deal", "AT&T deal"),
    ("a second\\team of rocketeers", "a second team of rocketeers"),
    ("  spaced \t out\n text ", "spaced out text"),
    ("Sales rose #151; again", "Sales rose\u2014 again"),
    ("plain text stays", "plain text stays"),
])
def test_clean_text_agnews_rules(raw, expected):
    assert clean_text(raw, "agnews") == expected


@pytest.mark.parametrize("raw, expected", [
    ("AT&amp;T &lt;b&gt;deal&lt;/b&gt;", "AT&T <b>deal</b>"),  # entities only: markup in the data is kept
    ("C:\\Users\\me  #36;5 quot;x", "C:\\Users\\me #36;5 quot;x"),  # backslashes, AG News debris: untouched
    ("  spaced \t out\n text ", "spaced out text"),
])
def test_clean_text_generic_rules_touch_only_entities_and_whitespace(raw, expected):
    assert clean_text(raw) == expected == clean_text(raw, "generic")


@pytest.mark.parametrize("rules", ["generic", "agnews"])
@pytest.mark.parametrize("raw", ["&lt;b&gt;x&lt;/b&gt;  #36;5", "a  quot;b quot; c", "x"])
def test_clean_is_idempotent(raw, rules):
    once = clean_text(raw, rules)
    assert clean_text(once, rules) == once
