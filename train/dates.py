"""Seeded generator of (human-written date, ISO date) pairs for the dates-encdec model.

Dates are drawn from 1000-01-01 .. 2999-12-31 in the proleptic Gregorian calendar (Python's `datetime`, which
also computes the weekdays, so they are always correct). The formats (FORMATS below) follow fixed
conventions, so every input has exactly one reading:

* slashes with the year last are month first (US): "3/14/2021", "03/14/21", unless the first number is over
  12, which no month is: then they are day first, "14/3/2021", "31/12/1999". The generator writes a day-first
  slashed date only when its day is over 12, so month first stays the reading whenever both are possible;
* dots and dashes with the year last are day first: "14.03.2021", "14-03-2021";
* the year first is always year-month-day: "2021.3.14", "2021-03-14", "1988/1/15", "20210314";
* two-digit years: 50..99 -> 1950..1999, 00..49 -> 2000..2049. A two-digit year cannot name another
  century, so the formats with one (TWO_DIGIT_YEAR) are drawn from 1950..2049 only. Every other format is
  drawn from the whole range;
* ordinals come as "3rd" or written out, "third", "twenty-first", "thirty-first".

Month and weekday names come capitalised, lowercase or uppercase.

Split: the test set is 2,000 (input, ISO) pairs on 2,000 distinct calendar days, format i % len(FORMATS) for
the i-th, so every format has 48 or 49 of them, each day drawn uniformly from the days that format can write
(seed TEST_SEED). The days of the hand-written EXTRA_EXAMPLES (the dates a learner tried first) are held out
too. Training pairs are drawn on the fly, only from the other days. Train and test therefore share no date,
and so no input string: a string names one date. `check_split` asserts both on the pairs actually drawn.

Vocabulary (character level, shared by source and target): id 0 = <pad>, 1 = <bos>, 2 = <eos>, then the
characters in VOCAB_CHARS. Stored in the checkpoint's "tokenizer" metadata as
    {"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", " ", ...], "pad": 0, "bos": 1, "eos": 2}
The source is the input's characters with no BOS/EOS, right-padded with 0. The decoder input is BOS followed
by the 10 ISO characters, and the target is the ISO characters followed by EOS.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Dict, Iterable, List, Optional, Set, Tuple

START = dt.date(1000, 1, 1)
END = dt.date(2999, 12, 31)
NUM_DAYS = (END - START).days + 1  # 730,485
YY_START = dt.date(1950, 1, 1)  # the days a two-digit year can name
YY_END = dt.date(2049, 12, 31)
TEST_SIZE = 2000
TEST_SEED = 1234
TRAIN_SEED = 42

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
MONTHS_ABBR = [m[:3] for m in MONTHS]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DAYS_ABBR = [d[:3] for d in DAYS]
ORDINAL_WORDS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
                 "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
                 "eighteenth", "nineteenth", "twentieth"]
ORDINAL_WORDS += ["twenty-" + w for w in ORDINAL_WORDS[:9]] + ["thirtieth", "thirty-first"]
assert len(ORDINAL_WORDS) == 31


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suf = "th"
    else:
        suf = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suf}"


# Which date part each template field writes (for the cross-attention spans).
FIELD_PART = {"d": "day", "dd": "day", "do": "day", "dw": "day", "m": "month", "mm": "month", "M": "month",
              "Mon": "month", "Y": "year", "yy": "year", "W": "weekday", "Wd": "weekday"}


def _f(d: dt.date) -> Dict[str, str]:
    return {
        "d": str(d.day), "dd": f"{d.day:02d}", "do": ordinal(d.day), "dw": ORDINAL_WORDS[d.day - 1],
        "m": str(d.month), "mm": f"{d.month:02d}",
        "M": MONTHS[d.month - 1], "Mon": MONTHS_ABBR[d.month - 1],
        "W": DAYS[d.weekday()], "Wd": DAYS_ABBR[d.weekday()],
        "Y": str(d.year), "yy": f"{d.year % 100:02d}",
    }


# Each format is a str.format template over the fields of _f; names are case-transformed afterwards.
FORMATS: List[str] = [
    "{do} of {M} {Y}",          # 3rd of March 2021
    "the {do} of {M}, {Y}",     # the 3rd of March, 2021
    "{mm}/{dd}/{yy}",           # 03/03/21 (US, month first)
    "{m}/{d}/{Y}",              # 3/3/2021 (US)
    "{mm}/{dd}/{Y}",            # 03/03/2021 (US)
    "{M} {d}, {Y}",             # March 3, 2021
    "{M} {do} {Y}",             # March 3rd 2021
    "{M} {do}, {Y}",            # March 3rd, 2021
    "{Mon} {d}, {Y}",           # Mar 3, 2021
    "{Mon}. {d}, {Y}",          # Mar. 3, 2021
    "{Wd} {d} {Mon} {Y}",       # Wed 3 Mar 2021
    "{Wd}, {Mon} {d}, {Y}",     # Wed, Mar 3, 2021
    "{Wd}, {Mon} {d} '{yy}",    # Wed, Mar 3 '21
    "{W}, {M} {d}, {Y}",        # Wednesday, March 3, 2021
    "{W} {d} {M} {Y}",          # Wednesday 3 March 2021
    "{W}, the {do} of {M} {Y}", # Wednesday, the 3rd of March 2021
    "{Y}.{m}.{d}",              # 2021.3.3
    "{Y}-{mm}-{dd}",            # 2021-03-03 (ISO itself)
    "{Y}/{mm}/{dd}",            # 2021/03/03
    "{Y}{mm}{dd}",              # 20210303
    "{d} {Mon} {Y}",            # 3 Mar 2021
    "{d} {M} {Y}",              # 3 March 2021
    "{dd} {Mon} {Y}",           # 03 Mar 2021
    "{d}-{Mon}-{Y}",            # 3-Mar-2021
    "{dd}-{Mon}-{yy}",          # 03-Mar-21
    "{dd}.{mm}.{Y}",            # 03.03.2021 (day first)
    "{d}.{m}.{Y}",              # 3.3.2021 (day first)
    "{dd}-{mm}-{Y}",            # 03-03-2021 (day first)
    "{Mon} {Y}, {d}",           # Mar 2021, 3  (odd but unambiguous)
    "{M} the {do}, {Y}",        # March the 3rd, 2021
    # added for the dates a learner found mistranslated
    "{d}/{m}/{Y}",              # 31/12/1999 (day first: only written when the day is over 12)
    "{dd}/{mm}/{Y}",            # 31/12/1999
    "{dd}/{mm}/{yy}",           # 31/12/99
    "{Y}/{m}/{d}",              # 1988/1/15
    "{Y}-{m}-{d}",              # 1988-1-15
    "{M} {d} {Y}",              # July 4 1776
    "the {dw} of {M} {Y}",      # the third of March 2021
    "{dw} of {M}, {Y}",         # third of March, 2021
    "{M} {dw}, {Y}",            # March third, 2021
    "{W}, the {dw} of {M} {Y}", # Wednesday, the twenty-first of March 2021
]
DAY_FIRST_SLASH = {"{d}/{m}/{Y}", "{dd}/{mm}/{Y}", "{dd}/{mm}/{yy}"}
TWO_DIGIT_YEAR = {f for f in FORMATS if "{yy}" in f}

# The examples a learner tried first and a few more edge cases. Their days are held out of training.
EXTRA_EXAMPLES: List[Tuple[str, str]] = [
    ("July 4, 1776", "1776-07-04"),
    ("31/12/1999", "1999-12-31"),
    ("11.11.2150", "2150-11-11"),
    ("1988/1/15", "1988-01-15"),
    ("the third of March 2021", "2021-03-03"),
    ("14/7/1789", "1789-07-14"),
    ("1/1/1000", "1000-01-01"),
    ("December 31, 2999", "2999-12-31"),
    ("the twenty-ninth of February 2400", "2400-02-29"),
    ("Friday, the thirteenth of October 1307", "1307-10-13"),
]

VOCAB_CHARS = sorted(set(" ',-./0123456789" + "".join(MONTHS + DAYS + ORDINAL_WORDS).lower()
                         + "".join(MONTHS + DAYS + ORDINAL_WORDS).upper() + "".join(MONTHS + DAYS)
                         + "stndrdthe" + "STNDRDTHE"))
ITOS = ["<pad>", "<bos>", "<eos>"] + VOCAB_CHARS
STOI = {c: i for i, c in enumerate(ITOS) if i >= 3}
PAD, BOS, EOS = 0, 1, 2
MAX_SRC_LEN = 64  # longest input is 47 chars ("Wednesday, the twenty-seventh of September 2021")
TGT_LEN = 12  # BOS + 10 + EOS


def tokenizer_json() -> Dict:
    return {"kind": "chars", "itos": ITOS, "pad": PAD, "bos": BOS, "eos": EOS}


def can_write(fmt: str, d: dt.date) -> bool:
    """Whether `fmt` writes `d` with the reading the conventions give it."""
    if fmt in TWO_DIGIT_YEAR and not (YY_START <= d <= YY_END):
        return False
    if fmt in DAY_FIRST_SLASH and d.day <= 12:
        return False
    return True


def render_spans(d: dt.date, fmt: str, case: str) -> Tuple[str, Dict[str, Tuple[int, int]]]:
    """The input string and the character span [start, end) of its year, month, day and weekday fields."""
    f = _f(d)
    marked = fmt.format(**{k: f"\x01{k}\x02{v}\x03" for k, v in f.items()})
    out, spans, i = [], {}, 0
    while i < len(marked):
        c = marked[i]
        if c == "\x01":
            j = marked.index("\x02", i)
            key = marked[i + 1 : j]
            k = marked.index("\x03", j)
            start = len(out)
            out.extend(marked[j + 1 : k])
            spans[FIELD_PART[key]] = (start, len(out))
            i = k + 1
        else:
            out.append(c)
            i += 1
    s = "".join(out)
    if case == "lower":
        s = s.lower()
    elif case == "upper":
        s = s.upper()
    assert s == render(d, fmt, case)
    return s, spans


def render(d: dt.date, fmt: str, case: str) -> str:
    s = fmt.format(**_f(d))
    if case == "lower":
        s = s.lower()
    elif case == "upper":
        s = s.upper()
    return s


def iso(d: dt.date) -> str:
    return d.isoformat()


def is_valid_iso(s: str) -> bool:
    """A 'YYYY-MM-DD' string that names a real day of the proleptic Gregorian calendar."""
    if len(s) != 10 or s[4] != "-" or s[7] != "-" or not (s[:4] + s[5:7] + s[8:]).isdigit():
        return False
    try:
        dt.date(int(s[:4]), int(s[5:7]), int(s[8:]))
    except ValueError:
        return False
    return True


def render_ymd(y: int, m: int, d: int, fmt: str, case: str) -> str:
    """Renders a (year, month, day) that need not exist, e.g. February 30: formats without a weekday only."""
    assert "{W" not in fmt
    f = {"d": str(d), "dd": f"{d:02d}", "do": ordinal(d), "dw": ORDINAL_WORDS[d - 1], "m": str(m),
         "mm": f"{m:02d}", "M": MONTHS[m - 1], "Mon": MONTHS_ABBR[m - 1], "Y": str(y), "yy": f"{y % 100:02d}"}
    s = fmt.format(**f)
    return s.lower() if case == "lower" else (s.upper() if case == "upper" else s)


def impossible_inputs(n: int, seed: int) -> List[str]:
    """n inputs that name no real day (April 31, February 29 of a common year, February 30): the model must
    still answer with a real date, or its validity is not a property of training."""
    rng = random.Random(seed)
    fmts = [f for f in FORMATS if "{W" not in f]
    out = []
    while len(out) < n:
        fmt = rng.choice(fmts)
        y = rng.randint(1950, 2049) if fmt in TWO_DIGIT_YEAR else rng.randint(1000, 2999)
        m = rng.randint(1, 12)
        nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
        last = (nxt - dt.timedelta(days=1)).day
        if last == 31:
            continue
        d = rng.randint(last + 1, 31)
        if fmt in DAY_FIRST_SLASH and d <= 12:
            continue
        out.append(render_ymd(y, m, d, fmt, rng.choices(CASES, weights=CASE_WEIGHTS)[0]))
    return out


def day_at(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def draw_day(rng: random.Random, fmt: str, exclude: Optional[Set[dt.date]] = None) -> dt.date:
    """A day drawn uniformly from those `fmt` can write, outside `exclude`."""
    lo, hi = (YY_START, YY_END) if fmt in TWO_DIGIT_YEAR else (START, END)
    n = (hi - lo).days
    while True:
        d = lo + dt.timedelta(days=rng.randint(0, n))
        if can_write(fmt, d) and (exclude is None or d not in exclude):
            return d


CASES = ["as_is", "lower", "upper"]
CASE_WEIGHTS = [6, 2, 2]


def random_pair(rng: random.Random, exclude: Set[dt.date], fmt: Optional[str] = None) -> Tuple[str, str, str]:
    """(input, ISO, format) with a uniformly drawn format (unless given) and a day outside `exclude`."""
    fmt = fmt or rng.choice(FORMATS)
    d = draw_day(rng, fmt, exclude)
    case = rng.choices(CASES, weights=CASE_WEIGHTS)[0]
    return render(d, fmt, case), iso(d), fmt


def test_set() -> List[Dict]:
    """2,000 held-out pairs on distinct days: format i % len(FORMATS), day uniform over what it can write."""
    rng = random.Random(TEST_SEED)
    used: Set[dt.date] = set()
    out = []
    for i in range(TEST_SIZE):
        fmt = FORMATS[i % len(FORMATS)]
        d = draw_day(rng, fmt, used)
        used.add(d)
        case = rng.choices(CASES, weights=CASE_WEIGHTS)[0]
        s, spans = render_spans(d, fmt, case)
        out.append({"input": s, "expected": iso(d), "format": fmt, "spans": spans})
    return out


def held_out_days() -> Set[dt.date]:
    days = {dt.date.fromisoformat(t["expected"]) for t in test_set()}
    days |= {dt.date.fromisoformat(t) for _, t in EXTRA_EXAMPLES}
    return days


def check_split(train_strings: Iterable[str], train_isos: Iterable[str], test: List[Dict]) -> None:
    ts = {t["input"] for t in test} | {s for s, _ in EXTRA_EXAMPLES}
    ti = {t["expected"] for t in test} | {t for _, t in EXTRA_EXAMPLES}
    assert not set(train_strings) & ts, "train and test share an input string"
    assert not set(train_isos) & ti, "train and test share a date"


def encode_src(s: str) -> List[int]:
    return [STOI[c] for c in s]


def encode_tgt(t: str) -> List[int]:
    return [BOS] + [STOI[c] for c in t] + [EOS]


def decode(ids: List[int]) -> str:
    return "".join(ITOS[i] for i in ids if i >= 3)


if __name__ == "__main__":
    te = test_set()
    held = held_out_days()
    rng = random.Random(TRAIN_SEED)
    tr = [random_pair(rng, held) for _ in range(100_000)]
    check_split([s for s, _, _ in tr], [t for _, t, _ in tr], te)
    for s, t in EXTRA_EXAMPLES:
        assert all(c in STOI for c in s), s
    longest = max((render(dt.date(2021, 9, 27), f, "as_is") for f in FORMATS), key=len)
    print(len(tr), len(te), len(ITOS), len(FORMATS), max(len(s) for s, _, _ in tr), repr(longest), len(longest))
    r = random.Random(0)
    for t in r.sample(te, 15):
        print(f"{t['input']!r:50} -> {t['expected']}  {t['spans']}")
