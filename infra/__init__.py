"""CDK constructs of the sdeks deployment; ``app.py`` at the repo root assembles them."""
