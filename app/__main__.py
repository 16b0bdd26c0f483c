"""`python -m app` starts the desktop app (same as `tessera gui`)."""

from app.cli import main

if __name__ == "__main__":
    main(["gui"])
