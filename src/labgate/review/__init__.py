"""Code review: labgate tests every proposed patch of a Gerrit or GitHub project and votes.

One folder per code review system (``gerrit/``, ``github/``) behind the small interface of
:mod:`labgate.review.base` (events in, votes out); the shared loop (:mod:`labgate.review.loop`)
queues patch sets durably in the store (:mod:`labgate.store.review`), runs a ``review`` flight
for each and turns its verdict into a vote (:mod:`labgate.review.vote`).
"""
