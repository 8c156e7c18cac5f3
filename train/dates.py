"""Seeded generator of (human-written date, ISO date) pairs for the dates-encdec model.

Dates are drawn from 1950-01-01 .. 2049-12-31. Weekdays are computed with `datetime`, so they are always
correct. The formats (FORMATS below) follow fixed conventions, so every input has exactly one reading:

* slashes are US order, month first: "3/14/2021", "03/14/21";
* dots and dashes with the year last are day first: "14.03.2021", "14-03-2021";
* the year first is always year-month-day: "2021.3.14", "2021-03-14", "20210314";
* two-digit years: 50..99 -> 1950..1999, 00..49 -> 2000..2049.

Month and weekday names come capitalised, lowercase or uppercase.

Split: a fixed random set of 2,000 calendar days is the test set (one input each, seed TEST_SEED). Training
pairs are drawn only from the other days. Train and test therefore share no date, and so no input string.
A string names one date, so a shared string would mean a shared date. `split()` also checks both.

Vocabulary (character level, shared by source and target): id 0 = <pad>, 1 = <bos>, 2 = <eos>, then the
characters in VOCAB_CHARS. Stored in the checkpoint's "tokenizer" metadata as
    {"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", " ", ...], "pad": 0, "bos": 1, "eos": 2}
The source is the input's characters with no BOS/EOS, right-padded with 0. The decoder input is BOS followed
by the 10 ISO characters, and the target is the ISO characters followed by EOS.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Callable, Dict, List, Tuple

START = dt.date(1950, 1, 1)
END = dt.date(2049, 12, 31)
NUM_DAYS = (END - START).days + 1  # 36,525
TEST_SIZE = 2000
TEST_SEED = 1234
TRAIN_SEED = 42

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
MONTHS_ABBR = [m[:3] for m in MONTHS]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DAYS_ABBR = [d[:3] for d in DAYS]


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suf = "th"
    else:
        suf = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suf}"


def _f(d: dt.date) -> Dict[str, str]:
    return {
        "d": str(d.day), "dd": f"{d.day:02d}", "do": ordinal(d.day),
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
]

VOCAB_CHARS = sorted(set(" ',-./0123456789" + "".join(MONTHS + DAYS) + "".join(MONTHS + DAYS).lower()
                         + "".join(MONTHS + DAYS).upper() + "stndrdthe" + "STNDRDTHE"))
ITOS = ["<pad>", "<bos>", "<eos>"] + VOCAB_CHARS
STOI = {c: i for i, c in enumerate(ITOS) if i >= 3}
PAD, BOS, EOS = 0, 1, 2
MAX_SRC_LEN = 40  # longest input is ~37 chars ("Wednesday, the 30th of September 2021")
TGT_LEN = 12  # BOS + 10 + EOS


def tokenizer_json() -> Dict:
    return {"kind": "chars", "itos": ITOS, "pad": PAD, "bos": BOS, "eos": EOS}


def render(d: dt.date, fmt: str, case: str) -> str:
    s = fmt.format(**_f(d))
    if case == "lower":
        s = s.lower()
    elif case == "upper":
        s = s.upper()
    return s


def iso(d: dt.date) -> str:
    return d.isoformat()


def random_pair(rng: random.Random, d: dt.date) -> Tuple[str, str]:
    fmt = rng.choice(FORMATS)
    case = rng.choices(["as_is", "lower", "upper"], weights=[6, 2, 2])[0]
    return render(d, fmt, case), iso(d)


def all_days() -> List[dt.date]:
    return [START + dt.timedelta(days=i) for i in range(NUM_DAYS)]


def test_days() -> List[dt.date]:
    days = all_days()
    return random.Random(TEST_SEED).sample(days, TEST_SIZE)


def split(num_train: int = 200_000) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """(train pairs, test pairs): 2,000 test pairs on 2,000 held-out days; `num_train` pairs on the others."""
    tdays = test_days()
    held = set(tdays)
    trng = random.Random(TEST_SEED + 1)
    test = [random_pair(trng, d) for d in tdays]
    pool = [d for d in all_days() if d not in held]
    rng = random.Random(TRAIN_SEED)
    train = [random_pair(rng, rng.choice(pool)) for _ in range(num_train)]
    assert not {s for s, _ in train} & {s for s, _ in test}, "train and test share an input string"
    assert not {t for _, t in train} & {t for _, t in test}, "train and test share a date"
    return train, test


def encode_src(s: str) -> List[int]:
    return [STOI[c] for c in s]


def encode_tgt(t: str) -> List[int]:
    return [BOS] + [STOI[c] for c in t] + [EOS]


def decode(ids: List[int]) -> str:
    return "".join(ITOS[i] for i in ids if i >= 3)


if __name__ == "__main__":
    tr, te = split()
    print(len(tr), len(te), len(ITOS), max(len(s) for s, _ in tr + te))
    r = random.Random(0)
    for s, t in r.sample(te, 15):
        print(f"{s!r:45} -> {t}")
