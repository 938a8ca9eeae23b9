"""Peers the engine is compared with: what an administrator would write instead of oktasync."""
