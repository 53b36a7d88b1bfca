"""The live venue: orders sent to Upbit through a persisted state machine (issue 23).

``states`` (pure) is the machine, ``checks`` (pure) what refuses an order before anything is sent,
``band`` (pure) the price band checked against the exchange's book before a market order, ``store``
the ``venue_orders`` SQL, ``venue`` the :class:`UpbitVenue` that ties them to the client.
"""
