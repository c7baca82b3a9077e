"""The quota service: answers "may this user generate one more image?" from published limits.

Windows are fixed and aligned to the Unix epoch in UTC: a tier whose window is ``W`` seconds
counts usage in the intervals ``[k*W, (k+1)*W)``. So a ``24h`` window is the calendar day in
UTC (it resets at 00:00 UTC for every user), a ``3h`` window resets at 00:00, 03:00, 06:00 ...
UTC, and ``resetSeconds`` is the time left until the current interval ends. Counters are per
(policy, tier, subject, window); a limit change applies at once to the current window (a
user who already used more than a tightened limit is refused until the window resets), and a
change of the window length starts counting afresh.

Layout: :mod:`.limits` (the limits in force),
:mod:`.store` (the store interface) with :mod:`.memory_store` and :mod:`.redis_store`,
:mod:`.service` (decisions over a store), :mod:`.app` (the aiohttp shell), :mod:`.sources`
(limits from files or ConfigMaps), :mod:`.metrics`, :mod:`.openapi`, :mod:`.cli`.
"""
