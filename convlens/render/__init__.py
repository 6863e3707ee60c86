"""The ground floor's pictures and files: arrays in, pictures and files out.

- :mod:`.colors`: the one colour-map registry (``check_cmap``, ``lut``, ``colorize``), fonts;
- :mod:`.grid`: the one grid compositor (``grid``) and the feature-map tiles on it
  (``tile_maps``, ``map_tiles``, ``map_image``, ``stage_image``), ``titled``, ``colorbar``;
- :mod:`.overlay`: heatmaps over pictures in any form (``overlay``, ``to_rgb``);
- :mod:`.kernels_fig`, :mod:`.curves`, :mod:`.confusion`: figures drawn on Agg canvases
  (no ``matplotlib.use``), returned as PIL images;
- :mod:`.html`: self-contained HTML (templates, data URIs); :mod:`.files`: atomic writes and
  the ``Saved`` record of what a ``save()`` wrote.

Nothing here knows a result class: views (``convlens.lens``) hand it arrays and titles.
"""
