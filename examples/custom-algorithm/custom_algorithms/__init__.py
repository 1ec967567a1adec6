"""Two algorithms fedsim does not ship, written against its plugin API only.

* ``fedavgm.FedAvgM``: FedAvg with server momentum (Hsu et al., 2019) — state on the server;
* ``scaffold.Scaffold``: SCAFFOLD's control variates (Karimireddy et al., 2020) — state on every
  device that survives rounds, and a server control variate that travels with the model.
"""
