"""The 2D toy head: rectified flow on eight Gaussians (or moons, checkerboard), the worked
example of a head (:mod:`flow3d.toy.head`), with sample distances (:mod:`flow3d.toy.metrics`)
and a demo (:mod:`flow3d.toy.demo`)."""
