"""The relay: ships captured changes to the peer, in order per record, at least once."""
