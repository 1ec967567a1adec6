"""The semantic registry: RDF vocabulary, device catalog and named SPARQL queries.

rdflib is imported only under this package; callers get pydantic objects, never rdflib nodes.
"""
