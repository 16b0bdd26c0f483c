"""Federated task runtime: task packages, the organization SDK, the model validator, the runner."""

# The argument that makes a frozen bundle's executable run the sandbox child instead of the app
# (a bundle has no Python interpreter to hand `-c`); see app/launcher.py and agents/sandbox.py.
SANDBOX_WORKER_ARG = "--tessera-sandbox-worker"
