import os

# No test may reach a model hub: everything loads from packages or folders the tests write.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import tempfile

# Encoded-caption caches go to a throwaway folder, not the user's ~/.cache/loom.
os.environ.setdefault("LOOM_CACHE", tempfile.mkdtemp(prefix="loom-test-cache-"))
