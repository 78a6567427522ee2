"""Routes for the router tests: three kinds of prompt, training and held-out apart."""

# Three routes with prompts of clearly different kinds; TRAIN and HELDOUT share no prompt.
TRAIN = {
    "general": ["Hello, how are you today?", "Write a short poem about autumn.", "What is the capital of Italy?",
                "Give me a pancake recipe.", "Tell me a joke about dogs.", "How far away is the Sun?",
                "Suggest a name for my cat.", "What is a good way to relax after work?"],
    "kb:pydoc": ["What does the pass statement do in Python?", "How does a Python for loop work?",
                 "What does break do in a Python loop?", "How do I define a class in Python?",
                 "What is a Python list comprehension?", "What does the Python with statement do?",
                 "How are Python exceptions raised?", "What is the Python del statement?"],
    "recommend:movies": ["I liked Toy Story and Babe. What should I watch?", "Recommend movies like Star Wars.",
                         "I enjoyed Fargo, suggest my next film.", "Movies similar to Casablanca, please.",
                         "What films would a fan of Alien enjoy?", "I loved Heat and Seven. Any movie tips?",
                         "Suggest a movie for someone who liked Titanic.", "Give me film picks like Jaws."],
}
HELDOUT = {
    "general": ["Write a haiku about rain.", "Why is the ocean salty?"],
    "kb:pydoc": ["How does Python's try/finally statement behave?", "What does a Python lambda expression create?"],
    "recommend:movies": ["I watched Speed and loved it, which movies next?", "Fan of Vertigo here: movie ideas?"],
}


def write_routes(path, routes: dict) -> object:
    import json

    path.write_text("".join(json.dumps({"prompt": p, "route": r}) + "\n" for r, ps in routes.items() for p in ps))
    return path
