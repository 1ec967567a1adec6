"""The ground floor: pure data and maths shared by clients, server, devices and ontology.

Nothing here imports ``flwr.simulation``, rdflib or the top floor of ``fedsim``.
"""
