"""Review Board: review requests in by polling the Web API (a cursor on their ``last_updated``),
each published diff revision tested as a commit made by applying the raw diff onto its base
commit in the tree's mirror, results out as *status updates* (service id ``context``, default
``labgate``) with the full message in a review attached to them.

Tested against a real Review Board server (``tests/reviewboard.py`` installs and starts one).
"""

from labgate.review.drivers import ReviewDriver, register
from labgate.review.reviewboard.connector import ReviewBoardConnector

__all__ = ["ReviewBoardConnector"]

register(ReviewDriver("reviewboard", connector=ReviewBoardConnector))
