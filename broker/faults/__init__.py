"""Fault injection: record what every party saw while brokers are killed and restarted,
then judge the record.

* :mod:`broker.faults.events`: the history format (one JSON object a line);
* :mod:`broker.faults.history`: the checker, pure functions over a history;
* :mod:`broker.faults.recorder`: agency nodes and an auditor that record as they go;
* :mod:`broker.faults.trial`: one crash trial against a real ``broker serve`` process.

docs/crash-safety.md describes the format and what the checker proves.
"""
