"""The app's Gradio UI: one builder per tab (``sample_tab``, ``neurons_tab``, ``tsne_tab``,
``inpaint_tab``) and the widgets they share (``widgets``). Layout, events and streaming only;
every computation lives in ``ppgn_core.studio``."""
