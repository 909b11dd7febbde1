"""chaosfs-controller: Chaos Mesh 0.9.1's IoChaos resource reconciled against chaosfs sidecars."""
