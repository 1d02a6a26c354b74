"""Operations on top of the relay's bookkeeping: inspect batches, replay, skip, snapshot, cleanup.

Nothing here delivers to the peer. Replay and snapshot put changes into the outbox, and
the running relay (`cdc-bridge run`) ships them: one delivery code path.
"""
