// Everything niivue exports, as window.niivue (Niivue, NVImage, SLICE_TYPE, ...).
import * as niivue from "@niivue/niivue";

window.niivue = niivue;
