"""``meltguard simulate``: a day of demand replayed against a simulated GPU fleet.

The ``meltguard`` strategy calls the operator's own decision core; nothing here re-implements
a rule of it. Layout: :mod:`.scenario` (the YAML file format, validated like policies),
:mod:`.demand` (users and quota checks), :mod:`.warmup` (the day starts in a normal night's
steady state), :mod:`.thermal` (GPU profiles: power, heat, slowdown, cooling failures),
:mod:`.queues` (a queue per GPU), :mod:`.fleet` (replicas, queues and heat together),
:mod:`.strategies` (meltguard and the two baselines), :mod:`.engine` (the loop and figures),
:mod:`.yardstick` (the best any strategy could do), :mod:`.compare` (all strategies on the
same users), :mod:`.suite` (scenarios x seeds), :mod:`.report` and :mod:`.plot` (output),
:mod:`.cli` (the command).
"""
