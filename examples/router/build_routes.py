"""Write the example router's routes files: ``heldout.jsonl`` (written first, never tuned on)
and ``train.jsonl``.

Four specialists this toolkit builds: ``general`` (the chat model), ``kb:pydoc`` (the support
bot over Python's language reference, examples/pydoc-kb), ``docs:invoice`` (the document
extractor on a pasted invoice) and ``recommend:movies`` (a recommender trained on MovieLens
100K). The two files differ on purpose: other topics and wordings for chat and Python
questions, other instruction templates and the held-out page layouts for invoices, other
request templates and other movies for recommendations.

    python examples/router/build_routes.py [../shared/data/ml-100k] [OUT_DIR]
"""

from __future__ import annotations

import collections
import json
import random
import sys
from pathlib import Path

# ---- held-out prompts (written before the training prompts; never used for a tuning decision) ----
HELDOUT_GENERAL = [
    "What spices go well in a lentil soup?",
    "Plan a three-day trip to Lisbon for me.",
    "Write a haiku about the first snow of winter.",
    "How many minutes are there in a week?",
    "Why do cats purr?",
    "Give me a catchy name for a bakery that sells sourdough.",
    "What is the difference between weather and climate?",
    "Can you suggest a warm-up routine before running?",
    "Translate 'good evening, how are you?' into Spanish.",
    "Tell me a fun fact about octopuses.",
    "How do I politely decline a wedding invitation?",
    "What should I pack for a camping weekend in the mountains?",
    "Explain photosynthesis to a ten-year-old.",
    "Write a limerick about a forgetful robot.",
    "Who was the first person to walk on the Moon?",
    "What are some tips for sleeping better?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "Is it better to rent or to buy a house?",
    "How long should I boil an egg for a soft yolk?",
    "What is 15 percent of 240?",
    "Help me write a birthday message for my grandmother.",
    "What causes the seasons on Earth?",
    "hi! how is your day going?",
    "Suggest three names for a golden retriever puppy.",
    "What is the tallest mountain in Africa?",
]
HELDOUT_PYDOC = [
    "In Python, what does the finally clause of a try statement guarantee?",
    "How does a Python generator function differ from a normal function?",
    "What does the nonlocal statement do in Python?",
    "When is the __exit__ method of a context manager called?",
    "Which Python statement raises an exception explicitly?",
    "What does 'assert x > 0' do when Python runs with -O?",
    "How are default argument values evaluated in a Python def?",
    "What is the result of comparing two Python lists with == ?",
    "Explain Python's lambda expressions.",
    "How does Python resolve a name: local, enclosing, global, builtins?",
    "What is the difference between 'is' and '==' in Python?",
    "What does the Python yield from expression delegate to?",
    "How do I write a conditional expression (ternary) in Python?",
    "What does the star in def f(*args) collect?",
    "What are Python's augmented assignment statements like += ?",
    "In Python, what happens when a class defines __slots__?",
    "Which Python exceptions can an except clause without a type catch?",
    "How does the Python import system find a module?",
    "What does the async with statement do in Python?",
    "What kinds of objects are hashable in Python?",
    "How is operator precedence defined for 'not', 'and', 'or' in Python?",
    "What is a Python decorator applied to a class?",
    "What does the __getattr__ method of a Python class control?",
    "python: what is an f-string and how are its expressions evaluated?",
    "What does the global keyword declare inside a Python function?",
]
HELDOUT_DOCS_TEMPLATES = [
    "Pull the invoice number, dates and total out of this document:\n\n{doc}",
    "I scanned this bill. What are its fields? Give me JSON.\n{doc}",
    "{doc}\n\nParse the above invoice into structured data.",
    "Can you read this invoice and return the due date, PO number and amount due?\n---\n{doc}\n---",
    "Turn this supplier invoice into a JSON record:\n{doc}",
]
HELDOUT_RECOMMEND_TEMPLATES = [
    "My favourite films are {a} and {b}. What should I see next?",
    "Just finished {a}; loved it. Anything similar?",
    "Movie night! We enjoyed {a}, {b} and {c}. Recommend a few more.",
    "If someone likes {a}, which movies would they probably enjoy?",
    "Based on {a} and {b}, pick my next film to watch.",
]

# ---- training prompts ----
TRAIN_GENERAL = [
    "Hello! Who are you?",
    "Write a short email asking my manager for a day off on Friday.",
    "What is the capital of Australia?",
    "Give me three ideas for a rainy Sunday afternoon.",
    "Explain how a rainbow forms.",
    "What is the boiling point of water at sea level?",
    "Write a two-line poem about the ocean.",
    "How do I make a cup of green tea?",
    "Who painted the Mona Lisa?",
    "What are the benefits of drinking water?",
    "Tell me a joke about computers.",
    "How far is the Moon from the Earth?",
    "What is the largest planet in the solar system?",
    "Write a thank-you note for a colleague who helped me move.",
    "How many legs does a spider have?",
    "Give me a recipe for pancakes.",
    "What is the speed of light?",
    "How can I improve my public speaking?",
    "Write a short story opening about a lighthouse keeper.",
    "What is the meaning of the word 'serendipity'?",
    "Name five fruits that are high in vitamin C.",
    "How do airplanes stay in the air?",
    "Can you help me plan a healthy breakfast?",
    "What year did the Second World War end?",
    "Give me some advice for a job interview.",
    "What is the population of Japan, roughly?",
    "Explain what inflation means in simple words.",
    "Suggest a good name for a coffee shop.",
    "How do I stay motivated when studying?",
    "What is the chemical symbol for gold?",
    "Good morning! Can you cheer me up?",
    "Describe the water cycle in a few sentences.",
    "What languages are spoken in Switzerland?",
    "Write a polite complaint to my neighbour about noise.",
    "How many continents are there?",
    "What is a healthy number of hours to sleep?",
    "Compose a short toast for a friend's retirement party.",
    "Why is the sky blue?",
    "What's a good way to learn to play the guitar?",
    "Convert 10 miles to kilometres.",
]
TRAIN_PYDOC = [
    "What does the pass statement do in Python?",
    "Which loop does break terminate in Python?",
    "What does continue do inside a Python loop?",
    "In Python, what happens when you del a name?",
    "How does a Python for loop iterate over a sequence?",
    "What does the else clause on a Python while loop do?",
    "How do I define a function with keyword-only arguments in Python?",
    "What does the return statement do in a Python function?",
    "How are Python class attributes different from instance attributes?",
    "What is the __init__ method of a Python class for?",
    "How does the with statement work in Python?",
    "What exception does Python raise for an unbound name?",
    "What does the Python try/except statement do?",
    "How do Python list comprehensions work?",
    "What is the difference between a Python tuple and a list?",
    "How do I import a single name from a Python module?",
    "What does the Python 'in' operator test?",
    "Explain Python's slicing syntax a[i:j:k].",
    "What are Python's truth values: which objects are false?",
    "How does Python's if/elif/else statement work?",
    "What is the __str__ method used for in Python?",
    "What does the Python __repr__ method return?",
    "How are Python dictionaries compared?",
    "What is the Python 'while' statement?",
    "What does the Python 'raise ... from ...' form do?",
    "How does Python evaluate chained comparisons like a < b < c?",
    "What are Python's boolean operators and how do they short-circuit?",
    "What is the purpose of Python's __call__ method?",
    "How do I define a Python class that inherits from another?",
    "What does the Python 'del' statement do to a list element?",
    "What does Python's 'await' expression do?",
    "How are Python's integer division and modulo defined?",
    "What does the __len__ special method do in Python?",
    "What is a Python module's __name__ set to when run as a script?",
    "What does Python's 'is not' operator check?",
    "How does Python handle exceptions raised in an except clause?",
    "What is a Python coroutine defined with async def?",
    "How do Python's keyword arguments work in a call?",
    "What are Python's numeric types?",
    "What does the Python 'for ... else' construct do?",
]
TRAIN_DOCS_TEMPLATES = [
    "Extract the fields from this invoice:\n\n{doc}",
    "Here is an invoice. Return its invoice number, invoice date, due date and total as JSON.\n\n{doc}",
    "{doc}\n\nWhat are the invoice number and the total amount of this invoice?",
    "Read the following invoice and give me the structured fields.\n{doc}",
    "Please process this invoice:\n{doc}",
]
TRAIN_RECOMMEND_TEMPLATES = [
    "I liked {a} and {b}. What else should I watch?",
    "Recommend me some movies similar to {a}.",
    "I've watched {a}, {b} and {c}. Suggest my next movie.",
    "What films would you recommend to a fan of {a}?",
    "Give me movie recommendations: I enjoyed {a}.",
]


def popular_titles(data_dir: Path, count: int = 240) -> list[str]:
    """The ``count`` most rated MovieLens titles, most rated first."""
    titles = {}
    for line in (data_dir / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]:
        item, title = line.split("\t")[:2]
        titles[item] = title
    ratings = collections.Counter(line.split("\t")[1] for line in
                                  (data_dir / "ml-100k.inter").read_text().splitlines()[1:])
    return [titles[item] for item, _ in ratings.most_common(count) if item in titles]


def invoice_texts(layouts: list[str], count: int, seed: int) -> list[str]:
    from slmkit.docs.synthetic import make_documents

    documents = make_documents(count, {"invoice": layouts}, seed)
    return ["\n".join(str(line[2]) for line in d.lines if line[2] != "RECT") for d in documents]


def fill(templates: list[str], count: int, rng: random.Random, make) -> list[str]:
    return [templates[i % len(templates)].format(**make(rng)) for i in range(count)]


def build(data_dir: Path, out_dir: Path) -> None:
    from slmkit.docs.synthetic import HELDOUT_LAYOUTS, TUNE_LAYOUTS

    titles = popular_titles(data_dir)
    heldout_titles, train_titles = titles[1::2], titles[0::2]  # no movie appears in both files

    def movies(pool):
        return lambda rng: dict(zip("abc", rng.sample(pool, 3), strict=True))

    heldout_docs = invoice_texts(HELDOUT_LAYOUTS["invoice"], 25, seed=1001)
    train_docs = invoice_texts(TUNE_LAYOUTS["invoice"], 40, seed=7)
    heldout = ([(p, "general") for p in HELDOUT_GENERAL] + [(p, "kb:pydoc") for p in HELDOUT_PYDOC]
               + [(HELDOUT_DOCS_TEMPLATES[i % 5].format(doc=d), "docs:invoice") for i, d in enumerate(heldout_docs)]
               + [(p, "recommend:movies") for p in fill(HELDOUT_RECOMMEND_TEMPLATES, 25, random.Random(1001),
                                                         movies(heldout_titles))])
    train = ([(p, "general") for p in TRAIN_GENERAL] + [(p, "kb:pydoc") for p in TRAIN_PYDOC]
             + [(TRAIN_DOCS_TEMPLATES[i % 5].format(doc=d), "docs:invoice") for i, d in enumerate(train_docs)]
             + [(p, "recommend:movies") for p in fill(TRAIN_RECOMMEND_TEMPLATES, 40, random.Random(7),
                                                       movies(train_titles))])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("heldout.jsonl", heldout), ("train.jsonl", train)):
        text = "".join(json.dumps({"prompt": p, "route": r}, ensure_ascii=False) + "\n" for p, r in rows)
        (out_dir / name).write_text(text, encoding="utf-8")
        print(f"{out_dir / name}: {len(rows)} prompts")


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ml-100k"),
          Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).parent))
