"""``meltguard simulate``: a day of demand replayed against a simulated GPU fleet.

The ``meltguard`` strategy calls the operator's own decision core; nothing here re-implements
a rule of it. Layout: :mod:`.scenario` (the YAML file format, validated like policies),
:mod:`.demand` (users and quota checks), :mod:`.fleet` (replicas, queue, heat),
:mod:`.strategies` (meltguard and the two baselines), :mod:`.engine` (the loop and figures),
:mod:`.compare` (all strategies on the same users), :mod:`.report` and :mod:`.plot` (output),
:mod:`.cli` (the command).
"""
