;; A valid component with no imports and no exports: implements no world.
(component)
