"""Vision-language-action policies (config light; the model imports torch and transformers)."""
